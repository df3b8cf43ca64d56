"""Hub delivery in-process: say, send_to and broadcast, with real Client objects on socketpairs.

Who gets which line, exactly once, in posting order (concurrent senders included), private
lines after the room lines posted before them, and one send per reader for what piled up
between flushes. As in test_hub.py, each test asserts the return values and the exact bytes
each client's peer has received (``conn.take()`` settles the flusher first, see inproc.py).
"""

from __future__ import annotations

import socket
import threading

import pytest
from support.inproc import DEADLINE, GREETING_LINES, crlf

from chatd.core.events import Announcement, Motd, Said

# -- say / send_to ----------------------------------------------------------------------------


def test_say_reaches_every_other_member_exactly_once_without_echo(world):
    a, b, c, d = world.connected(4)
    world.hub.join(c.client, "elsewhere")
    a.take(), b.take(), c.take(), d.take()
    world.hub.say(a.client, Said("guest-1", "hi"))
    assert a.take() == b""
    assert b.take() == d.take() == b"<guest-1> hi\r\n"
    assert c.take() == b""


def test_say_keeps_posting_order_across_senders(world):
    a, b, c = world.connected(3)
    posted = []
    for i in range(100):
        sender = (a, b)[i % 3 == 0]
        line = f"<{sender.nick}> {i}"
        world.hub.say(sender.client, Said(sender.nick, str(i)))
        posted.append((sender, line))
    assert c.take() == crlf(*(line for _, line in posted))
    assert a.take() == crlf(*(line for s, line in posted if s is not a))
    assert b.take() == crlf(*(line for s, line in posted if s is not b))


def test_concurrent_senders_each_keep_their_order_and_nothing_is_lost(world):
    """Sessions post from their own threads at once: whatever the interleaving, every other
    member gets each sender's lines exactly once and in the order sent."""
    conns = world.connected(6)
    senders = conns[:4]  # conns[4:] only read

    def post(conn):
        for i in range(300):
            world.hub.say(conn.client, Said(conn.nick, str(i)))

    threads = [threading.Thread(target=post, args=(conn,)) for conn in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    expected = {conn.nick: [f"<{conn.nick}> {i}" for i in range(300)] for conn in senders}
    for conn in conns:
        got = conn.take().decode().split("\r\n")
        assert got.pop() == ""  # every line ends with CRLF
        for nick, lines in expected.items():
            mine = [line for line in got if line.startswith(f"<{nick}> ")]
            assert mine == ([] if nick == conn.nick else lines)
        assert len(got) == 300 * (len(senders) - (conn in senders))


def test_send_to_arrives_after_the_room_lines_posted_before_it(world):
    a, b = world.connected(2)
    world.hub.say(a.client, Said("guest-1", "one"))
    world.hub.send_to(b.client, Motd("private"), Motd("two lines"))
    world.hub.say(a.client, Said("guest-1", "three"))
    assert b.take() == crlf("<guest-1> one", "*** private", "*** two lines", "<guest-1> three")
    assert a.take() == b""


def test_send_to_a_removed_client_is_dropped(world):
    a, b = world.connected(2)
    world.end(a)
    world.hub.send_to(a.client, Motd("too late"))
    assert a.peer.read_to_eof() == b""
    assert b.take() == b""


def test_lines_posted_between_flushes_leave_in_one_send_per_reader(make_world):
    """The fan-out contract (rooms.py): each reader gets what piled up in one send, not one
    send per line. The flusher is started only once everything is queued, so the pile-up is
    certain; SOCK_SEQPACKET peers show each send as one record."""
    world = make_world(start=False)
    a, b, c = (world.connect(sock_type=socket.SOCK_SEQPACKET) for _ in range(3))
    for i in range(50):
        world.hub.say((a, b)[i % 2].client, Said((a, b)[i % 2].nick, str(i)))
    world.start()
    world.settle()
    said = [f"<{(a, b)[i % 2].nick}> {i}" for i in range(50)]
    greeting = [crlf(GREETING_LINES[0], f"*** you are {conn.nick}", *GREETING_LINES[1:]) for conn in (a, b, c)]
    assert c.peer.records() == [greeting[2], crlf(*said)]
    assert b.peer.records() == [greeting[1], crlf("*** guest-3 joined lobby", *said[::2])]
    assert a.peer.records() == [greeting[0], crlf("*** guest-2 joined lobby",
                                                  "*** guest-3 joined lobby", *said[1::2])]


# -- broadcast --------------------------------------------------------------------------------


def test_broadcast_to_everyone(world):
    a, b, c = world.connected(3)
    world.hub.join(c.client, "dev")
    a.take(), b.take(), c.take()
    assert world.hub.broadcast(Announcement("hello all")) == 3
    assert a.take() == b.take() == c.take() == b"*** [admin] hello all\r\n"


@pytest.mark.parametrize("name", ["dev", "#dev", "DEV"])
def test_broadcast_to_one_room(world, name):
    a, b, c = world.connected(3)
    world.hub.join(b.client, "dev")
    world.hub.join(c.client, "dev")
    a.take(), b.take(), c.take()
    assert world.hub.broadcast(Announcement("dev only"), name) == 2
    assert b.take() == c.take() == b"*** [admin] dev only\r\n"
    assert a.take() == b""


def test_broadcast_to_no_such_room(world):
    (a,) = world.connected(1)
    assert world.hub.broadcast(Announcement("nobody"), "nowhere") is None
    assert a.take() == b""


def test_broadcast_to_an_empty_server(world):
    assert world.hub.broadcast(Announcement("echo")) == 0
    assert world.hub.broadcast(Announcement("echo"), "lobby") == 0
