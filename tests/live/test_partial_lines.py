"""Clients that never send LF (issue 23 §1, SPEC §1 ``partial_line_timeout``).

chatd grew from a teaching example whose client sends each message with one ``send()`` and no
newline. Such a client's partial line is taken whole after a pause of ``partial_line_timeout``,
but only on a connection that has never ended a line with LF, so that an ``nc`` user (who
always sends LF) never sees a line cut in two. Real chatd, real ``nc``, and a client written
the way the teaching one is.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest
from test_nc import Netcat, pytestmark  # noqa: F401 - skips without nc, as test_nc does

from chatd.line.framing import LINE_TOO_LONG, LineFramer


class TeachingClient:
    """The teaching client: one ``send()`` per message, no newline, and a receive thread
    that prints (here: queues) what arrives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(1024)
            except OSError:
                data = b""
            if not data:
                self.lines.put(None)
                return
            buf += data
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                self.lines.put(line.decode())

    def send(self, message: str) -> None:
        self.sock.send(message.encode())

    def wait_for(self, line: str, timeout: float = 10.0) -> list[str]:
        return read_until(self.lines, line, "the teaching client", timeout)


def read_until(lines: queue.Queue, line: str, who: str, timeout: float = 10.0) -> list[str]:
    """Take lines (str, or bytes as nc prints them) from ``lines`` until ``line``; the lines
    before it. None in the queue: the output ended."""
    deadline, seen = time.monotonic() + timeout, []
    while True:
        try:
            got = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"{who} did not get {line!r}; got {seen}")
        assert got is not None, f"{who}'s output ended before {line!r}; got {seen}"
        text = got.decode().rstrip("\r\n") if isinstance(got, bytes) else got
        if text == line:
            return seen
        seen.append(text)


def nc_wait_for(nc: Netcat, line: str, timeout: float = 10.0) -> list[str]:
    return read_until(nc.lines, line, "nc", timeout)


def test_the_teaching_client_chats_with_an_nc_user_both_ways(chatd):
    srv = chatd()  # partial_line_timeout as shipped: 1 s
    nc = Netcat(srv.port, "-N")  # -N: nc ends when its input does
    try:
        nc.type("/nick netcat")
        nc_wait_for(nc, "*** you are now netcat")
        teacher = TeachingClient(srv.port)
        nc_wait_for(nc, "*** guest-2 joined lobby")
        teacher.send("hello from the seed client")
        nc_wait_for(nc, "<guest-2> hello from the seed client")
        teacher.send("/nick teacher")
        teacher.wait_for("*** you are now teacher")
        nc_wait_for(nc, "*** guest-2 is now known as teacher")
        nc.type("hi teacher")
        teacher.wait_for("<netcat> hi teacher")
    finally:
        nc.close()


def listener_and_teacher(chatd, timeout: float):
    """A chatd with ``partial_line_timeout``; an LF client (``listener``) and a teaching
    client (guest-2) in its lobby."""
    srv = chatd(limits={"partial_line_timeout": timeout})
    listener = srv.connect()
    listener.set_nick("listener")
    teacher = TeachingClient(srv.port)
    listener.wait_for("*** guest-2 joined lobby")
    return listener, teacher


def test_the_last_partial_line_arrives_when_the_client_closes(chatd):
    """With a timeout far longer than the test waits, the line can only come from the close."""
    listener, teacher = listener_and_teacher(chatd, 60)
    teacher.send("bye for now")
    teacher.sock.shutdown(socket.SHUT_RDWR)  # what the end of the teaching client's process does
    listener.expect("<guest-2> bye for now", timeout=10)
    listener.expect("*** guest-2 left lobby (connection closed)")
    teacher.sock.close()


def test_a_client_that_has_sent_lf_never_gets_a_line_cut_in_two(chatd):
    """A byte at a time, with a pause longer than partial_line_timeout mid-line: after one
    LF, the line waits for its LF and arrives whole."""
    srv = chatd(limits={"partial_line_timeout": 0.2})
    listener = srv.connect()
    listener.set_nick("listener")
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        slow.sendall(b"/nick slow\n")
        listener.wait_for("*** guest-2 is now known as slow")
        for byte in b"hel":
            slow.sendall(bytes([byte]))
        time.sleep(0.6)  # the pause being tested (three timeouts), not a synchronisation
        for byte in b"lo world\n":
            slow.sendall(bytes([byte]))
        assert listener.wait_for(lambda line: line.startswith("<slow> ")) == "<slow> hello world"
    finally:
        slow.close()


def test_with_partial_line_timeout_off_a_partial_line_waits_for_lf(chatd):
    listener, teacher = listener_and_teacher(chatd, 0)
    teacher.send("no newline yet")
    time.sleep(0.5)  # the silence being tested
    teacher.send(" and now one\n")
    assert listener.wait_for(lambda line: line.startswith("<guest-2> ")) == \
        "<guest-2> no newline yet and now one"


@pytest.mark.parametrize("fed, lf_seen, taken, after", [
    ([b"hello"], False, b"hello", None),
    ([b"hello\r"], False, b"hello", None),
    ([b"a\n", b"partial"], True, b"partial", None),  # the session decides whether to take it
    ([b""], False, None, None),
    ([b"x" * 80], False, None, b"next"),  # a too-long line being discarded: the pause ends it
])
def test_take_partial(fed, lf_seen, taken, after):
    framer = LineFramer(64)
    for data in fed:
        framer.feed(data)
    lines = []
    while (line := framer.next_line()) is not None:
        lines.append(line)
    assert framer.seen_lf is lf_seen
    assert framer.take_partial() == taken
    assert framer.pending_bytes == 0
    if after is not None:
        assert lines == [LINE_TOO_LONG]
        framer.feed(after + b"\n")
        assert framer.next_line() == after
