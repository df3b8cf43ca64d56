"""The session's reader loop in-process: the greeting, ``/quit``, EOF and resets, and endings
from outside (admin kick and ban, idle timeout, shutdown, sendq exceeded), each announced once.

Each client is a real :class:`chatd.core.session.Session` on a socketpair; these tests run its
real reader loop on its own thread, since ending the connection is the reader loop's job, and
assert the exact bytes every peer then has (the commands themselves: test_commands.py).
"""

from __future__ import annotations

import socket

import pytest
from structlog.testing import capture_logs
from support.inproc import crlf

from chatd.core.closing import SHUTDOWN, Close
from chatd.core.events import Banned, Error, ServerShutdown, YouWereKicked

# -- the reader loop: greeting, /quit, EOF ----------------------------------------------------


def test_session_greets_then_quits_with_reason(make_world):
    world = make_world(server_name="testnet", motd=("line one", "line two"))
    (b,) = world.connected(1)
    a = world.connect(register=False)
    world.run_session(a)
    greeting = crlf("*** welcome to testnet", "*** you are guest-2",
                    "*** line one", "*** line two")
    assert a.peer.read_exactly(len(greeting)) == greeting
    a.peer.send(b"/msg guest-1 bye now\r\n/quit  gone fishing \r\nnever handled\r\n")
    assert a.peer.read_to_eof() == b"*** -> guest-1: bye now\r\n*** bye\r\n"
    a.thread.join(3.0)
    assert not a.thread.is_alive()
    assert b.take() == crlf("*** guest-2 joined lobby", "*guest-2* bye now",
                            "*** guest-2 left lobby (quit: gone fishing)")
    assert world.hub.find("guest-2") is None


def test_quit_without_reason(world):
    (b,) = world.connected(1)
    a = world.connect(register=False)
    world.run_session(a)
    a.peer.send(b"/QUIT\n")
    a.peer.read_to_eof()
    a.thread.join(3.0)
    assert b.take() == crlf("*** guest-2 joined lobby", "*** guest-2 left lobby (quit)")


def _in_dev_with_b(world):
    """b in the lobby, a on a running session; both then in room dev, a's output read."""
    (b,) = world.connected(1)
    a = world.connect(register=False)
    world.run_session(a)
    a.peer.send(b"/join dev\n")
    joined = crlf("*** welcome to chatd", "*** you are guest-2",
                  "*** Type /help for the list of commands.", "*** you joined dev (1 member)")
    assert a.peer.read_exactly(len(joined)) == joined
    b.line(b"/join dev")
    assert b.take() == crlf("*** guest-2 joined lobby", "*** guest-2 left lobby",
                            "*** you joined dev (2 members)")
    return a, b


def test_peer_closing_is_announced(world):
    a, b = _in_dev_with_b(world)
    a.peer.sock.shutdown(socket.SHUT_WR)  # a clean FIN, as `nc -N` or telnet's quit
    assert a.peer.read_to_eof() == b"*** guest-1 joined dev\r\n"
    a.thread.join(3.0)
    assert not a.thread.is_alive()
    assert b.take() == b"*** guest-2 left dev (connection closed)\r\n"


def test_peer_reset_is_announced(world):
    a, b = _in_dev_with_b(world)
    world.settle()  # "guest-1 joined dev" is waiting unread on a's peer...
    a.peer.sock.close()  # ...so closing resets the connection, as TCP would
    a.thread.join(3.0)
    assert not a.thread.is_alive()
    assert b.take() == b"*** guest-2 left dev (connection reset)\r\n"


# -- the reader loop: ended from outside (admin kick and ban, idle, shutdown, sendq) ---------


def _running(world):
    """b registered in the lobby; a on a running session, its greeting read."""
    (b,) = world.connected(1)
    a = world.connect(register=False)
    world.run_session(a)
    greeting = crlf("*** welcome to chatd", "*** you are guest-2",
                    "*** Type /help for the list of commands.")
    assert a.peer.read_exactly(len(greeting)) == greeting
    # The join notice is queued just after the greeting, by the session thread: wait for it.
    joined = b"*** guest-2 joined lobby\r\n"
    assert b.peer.read_exactly(len(joined)) == joined
    assert b.take() == b""
    return a, b


@pytest.mark.parametrize("reason, notice, text, farewell", [
    (Close("kicked", "spam"), YouWereKicked("spam"), "*** you were kicked: spam",
     "*** guest-2 was kicked (spam)"),
    (Close("banned"), Banned(), "*** error: banned", "*** guest-2 left lobby (banned)"),
    (Close("idle"), Error("idle timeout"), "*** error: idle timeout",
     "*** guest-2 left lobby (idle timeout)"),
    (SHUTDOWN, ServerShutdown(), "*** server shutting down", None),
])
def test_ended_from_outside(world, reason, notice, text, farewell):
    a, b = _running(world)
    with capture_logs() as logs:
        world.disconnect(a, reason, notice)
        assert a.peer.read_to_eof() == crlf(text)
        a.thread.join(3.0)
    assert not a.thread.is_alive()
    assert b.take() == (crlf(farewell) if farewell else b"")
    assert world.hub.find("guest-2") is None
    ended = [e for e in logs if e["event"] == "client_disconnected"]
    assert [e["reason"] for e in ended] == [reason.text]
    kicked = [e["reason"] for e in logs if e["event"] == "client_kicked"]
    assert kicked == (["spam"] if reason.kind == "kicked" else [])


def test_a_client_that_stops_reading_is_dropped_for_sendq(make_world):
    world = make_world(sendq_bytes=8_000)
    (b,) = world.connected(1)
    a = world.connect(register=False, sndbuf=1024)  # and its peer never reads
    with capture_logs() as logs:
        world.run_session(a)
        joined = b"*** guest-2 joined lobby\r\n"  # a is registered, so it gets b's lines
        assert b.peer.read_exactly(len(joined)) == joined
        for i in range(400):
            b.line(f"line {i:04d} {'x' * 40}".encode())
        a.thread.join(3.0)
    assert not a.thread.is_alive()
    assert b.take() == b"*** guest-2 left lobby (sendq exceeded)\r\n"
    warnings = [e for e in logs if e["event"] == "sendq_exceeded"]
    assert [(e["log_level"], e["limit"]) for e in warnings] == [("warning", 8_000)]


def test_a_line_too_long_is_refused_and_the_connection_stays(world):
    a, b = _running(world)
    a.peer.send(b"y" * 1025 + b"\nshort\n")
    refused = b"*** error: line too long (max 1024 bytes)\r\n"
    assert a.peer.read_exactly(len(refused)) == refused
    short = b"<guest-2> short\r\n"  # the next line is handled: the session reads on
    assert b.peer.read_exactly(len(short)) == short
    b.line(b"still here?")
    assert a.take() == b"<guest-1> still here?\r\n"
    assert b.take() == b""
