"""The Flusher (chatd/core/flusher.py) in-process, over socketpairs: the exact bytes each peer gets.

No hub here: lines are queued with ``submit`` / ``disconnect`` / ``finish`` as the hub and the
sessions do, and the test reads the far end of each client's socketpair. A peer that "does not
read" is one whose socket has a small send buffer (inproc.SMALL_SNDBUF) and that the test leaves
alone until it decides to read. The session side of a connection is ``client.sock``: what its
``recv`` returns is what the session would see.
"""

from __future__ import annotations

import os
import time

import pytest
from support.inproc import DEADLINE, SMALL_SNDBUF, crlf
from support.waiting import wait_until

from chatd.core.closing import RESET, SENDQ_EXCEEDED, SHUTDOWN, Close
from chatd.core.events import Error, YouWereKicked
from chatd.core.flusher import HOLD_SECONDS


def lines(count: int, width: int = 60) -> list[bytes]:
    """``count`` distinct, numbered lines, so any loss, duplicate or reordering shows."""
    return [f"{i:06d} {'x' * width}".encode() + b"\r\n" for i in range(count)]


def session_sees_eof(conn) -> bool:
    """What the session's ``recv`` would return now: b"" once the read side is shut."""
    conn.client.sock.settimeout(DEADLINE)
    try:
        return conn.client.sock.recv(1) == b""
    finally:
        conn.client.sock.settimeout(None)


def fill(world, conn, total: int) -> bytes:
    """Queue ``total`` bytes (in lines) for a peer that is not reading; returns them."""
    data = b"".join(lines(total // 68 + 1))[:total]
    chunk = 4096
    for start in range(0, len(data), chunk):
        world.flusher.submit(conn.outbox, data[start:start + chunk])
    world.settle()
    return data


# -- start / stop / ping ----------------------------------------------------------------------


def test_start_and_stop_with_nothing_open(make_world):
    world = make_world()
    started = time.monotonic()
    assert world.flusher.stop(1.0) is True
    assert time.monotonic() - started < 0.5
    world.started = False  # already stopped: teardown must not stop it again


def test_ping_bumps_pongs_once_per_ping(world):
    assert world.flusher.pongs == 0
    world.flusher.ping()
    wait_until(lambda: world.flusher.pongs == 1, what="one pong")
    for _ in range(3):
        world.flusher.ping()
    wait_until(lambda: world.flusher.pongs == 4, what="four pongs")


def test_stop_is_bounded_when_a_connection_never_finishes(make_world):
    world = make_world()
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.submit(conn.outbox, b"hello\r\n")
    assert conn.peer.read_exactly(7) == b"hello\r\n"
    started = time.monotonic()
    assert world.flusher.stop(0.2) is True  # the session never calls finish()
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0, elapsed
    world.started = False
    conn.client.sock.close()  # the flusher leaves an unfinished socket to its session


def test_stop_cuts_a_lingering_drain_short(make_world):
    world = make_world()
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    fill(world, conn, 50_000)  # the peer never reads: the backlog cannot drain
    world.flusher.finish(conn.outbox, linger=True)  # would linger LINGER_SECONDS (2 s)
    started = time.monotonic()
    assert world.flusher.stop(0.2) is True
    assert time.monotonic() - started < 1.0
    world.started = False
    assert conn.client.sock.fileno() == -1  # closed at the stop deadline
    conn.peer.read_to_eof()


# -- delivery ---------------------------------------------------------------------------------


def test_work_queued_during_a_take_waits_out_the_hold(world):
    """The flusher takes its queue at most once per HOLD_SECONDS, so what comes while it
    works leaves together (issue 28). Without the hold the second call runs at once."""
    taken, ran = [], []

    def second():
        ran.append(time.monotonic())

    def first():  # on the flusher thread, inside a take
        taken.append(world.flusher.taken_at)
        world.flusher.call(second)

    world.flusher.call(first)
    wait_until(lambda: ran, DEADLINE, "the second call")
    assert ran[0] >= taken[0] + HOLD_SECONDS


def test_a_cluster_nodes_flusher_holds_longer():
    """A cluster node's flusher waits CLUSTER_HOLD_SECONDS between takes (issue 28); the
    hold is the flusher's own, so a single node's stays HOLD_SECONDS."""
    from chatd.core.flusher import CLUSTER_HOLD_SECONDS, Flusher

    flusher = Flusher(1 << 20, CLUSTER_HOLD_SECONDS)
    flusher.start()
    try:
        taken, ran = [], []

        def first():
            taken.append(flusher.taken_at)
            flusher.call(lambda: ran.append(time.monotonic()))

        flusher.call(first)
        wait_until(lambda: ran, DEADLINE, "the second call")
        assert ran[0] >= taken[0] + CLUSTER_HOLD_SECONDS > taken[0] + HOLD_SECONDS
        assert Flusher(1 << 20).hold == HOLD_SECONDS
    finally:
        flusher.stop(1.0)


def test_work_queued_as_the_flusher_finds_its_queue_empty_runs_once(world):
    """A call queued just after the flusher took an empty queue, before it looked at what it
    took, runs once. The flusher used to keep the empty list as its queue and iterate it
    too, so such a call ran at once and again at the next take: a private line sent twice,
    a room barrier passed twice (the accounts benchmark's ``flusher_crashed``, a KeyError
    in Room.pass_barrier, in 3 runs of 7). The interleaving is made exact here: the queue
    is a list that, the moment the flusher starts iterating what it took, has a call
    queued (as a session thread would, from the flusher thread itself: the lock is free
    then)."""
    flusher, runs = world.flusher, []

    class Queue(list):
        def __iter__(self):
            if not runs and not hasattr(self, "queued"):
                self.queued = True
                flusher.call(runs.append, "once")
            return super().__iter__()

    world.settle()
    with flusher._lock:
        flusher._queue = Queue()
    os.eventfd_write(flusher._wake_fd, 1)  # a take of the (empty) queue, as after a wake-up
    wait_until(lambda: runs, DEADLINE, "the call")
    world.settle()
    assert runs == ["once"]


def test_submit_delivers_exact_bytes(world):
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.submit(conn.outbox, crlf("*** héllo", "second\tline"), 2)
    assert conn.take() == b"*** h\xc3\xa9llo\r\nsecond\tline\r\n"
    assert conn.take() == b""  # nothing more, nothing twice


def test_many_submits_keep_their_order(world):
    conn = world.connect(admit=False, register=False, session=False)
    expected = lines(3000)
    for line in expected:
        world.flusher.submit(conn.outbox, line)
    assert conn.peer.read_exactly(sum(map(len, expected))) == b"".join(expected)
    assert conn.take() == b""


def test_submits_queued_before_start_are_delivered_in_order(make_world):
    world = make_world(start=False)
    conn = world.connect(admit=False, register=False, session=False)
    expected = lines(200)
    for line in expected:
        world.flusher.submit(conn.outbox, line)
    world.start()
    assert conn.take() == b"".join(expected)


def test_each_client_gets_only_its_own_lines(world):
    a, b = (world.connect(admit=False, register=False, session=False) for _ in range(2))
    world.flusher.submit(a.outbox, b"for a\r\n")
    world.flusher.submit(b.outbox, b"for b\r\n")
    world.flusher.submit(a.outbox, b"a again\r\n")
    assert a.take() == b"for a\r\na again\r\n"
    assert b.take() == b"for b\r\n"


# -- a peer that does not read ----------------------------------------------------------------


def test_backlog_grows_and_nothing_is_lost_once_the_peer_reads(make_world):
    world = make_world(sendq_bytes=200_000)
    slow = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    fast = world.connect(admit=False, register=False, session=False)
    data = fill(world, slow, 100_000)
    backlog = slow.outbox.backlog_bytes  # what `chatctl list` shows as SENDQ
    assert 90_000 < backlog <= 100_000  # the kernel took a few KiB, the rest waits
    world.flusher.submit(fast.outbox, b"not held up\r\n")
    assert fast.take() == b"not held up\r\n"  # a stalled client slows nobody else
    world.flusher.submit(slow.outbox, b"tail\r\n")  # joins the backlog, after it
    world.settle()
    assert slow.outbox.backlog_bytes == backlog + 6
    assert slow.peer.read_exactly(len(data) + 6) == data + b"tail\r\n"
    wait_until(lambda: slow.outbox.backlog_bytes == 0, what="the backlog to drain")
    assert slow.outbox.close_reason is None
    assert slow.take() == b""


def test_backlog_exactly_at_sendq_is_kept(make_world):
    world = make_world(sendq_bytes=20_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    data = fill(world, conn, 12_000)
    room = 20_000 - conn.outbox.backlog_bytes
    assert room > 0
    world.flusher.submit(conn.outbox, b"y" * room)  # reaches the limit, does not pass it
    world.settle()
    assert conn.outbox.backlog_bytes == 20_000
    assert conn.outbox.close_reason is None
    assert conn.peer.read_exactly(len(data) + room) == data + b"y" * room


def test_over_sendq_disconnects_with_reason(make_world):
    world = make_world(sendq_bytes=20_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    fill(world, conn, 12_000)
    room = 20_000 - conn.outbox.backlog_bytes
    world.flusher.submit(conn.outbox, b"z" * (room + 1))  # one byte past the limit
    world.settle()
    assert conn.outbox.close_reason == SENDQ_EXCEEDED
    assert conn.outbox.backlog_bytes == 0  # the backlog is dropped, not sent
    assert session_sees_eof(conn)  # the session is woken to clean up
    received = conn.peer.read_to_eof()  # shut down both ways: the user sees the close
    assert len(received) < 12_000 and b"z" not in received
    world.flusher.submit(conn.outbox, b"late\r\n")  # a dead client gets nothing more
    world.settle()
    assert conn.outbox.close_reason == SENDQ_EXCEEDED


def test_one_submit_bigger_than_sendq_disconnects(make_world):
    world = make_world(sendq_bytes=8_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    world.flusher.submit(conn.outbox, b"w" * 50_000)
    world.settle()
    assert conn.outbox.close_reason == SENDQ_EXCEEDED
    assert session_sees_eof(conn)


def test_peer_gone_is_a_reset(world):
    conn = world.connect(admit=False, register=False, session=False)
    conn.peer.sock.close()
    world.flusher.submit(conn.outbox, b"anyone there?\r\n")
    world.settle()
    assert conn.outbox.close_reason == RESET
    assert session_sees_eof(conn)


# -- ending a connection ----------------------------------------------------------------------


def test_disconnect_sends_the_notice_then_shuts_the_read_side(world):
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.submit(conn.outbox, b"before\r\n")
    world.flusher.disconnect(conn.outbox, Close("kicked", "spam"), YouWereKicked("spam"))
    assert conn.take() == b"before\r\n*** you were kicked: spam\r\n"
    assert conn.outbox.close_reason == Close("kicked", "spam")
    assert session_sees_eof(conn)  # the session's recv returns and it cleans up
    assert not conn.peer.eof  # the write side stays open until the session finishes
    world.flusher.disconnect(conn.outbox, Close("idle"), Error("second notice"))
    assert conn.take() == b""  # already ending: the first reason and notice stand
    assert conn.outbox.close_reason == Close("kicked", "spam")
    world.flusher.finish(conn.outbox, linger=True)
    conn.ended = True
    assert conn.peer.read_to_eof() == b""


def test_disconnect_without_notice(world):
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.disconnect(conn.outbox, SHUTDOWN)
    assert conn.take() == b""
    assert session_sees_eof(conn)
    assert conn.outbox.close_reason == SHUTDOWN


def test_disconnect_notice_waits_behind_the_backlog(make_world):
    world = make_world(sendq_bytes=200_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    data = fill(world, conn, 30_000)
    notice = b"*** you were kicked: slow\r\n"
    world.flusher.disconnect(conn.outbox, Close("kicked", "slow"), YouWereKicked("slow"))
    world.settle()
    assert session_sees_eof(conn)
    world.flusher.finish(conn.outbox, linger=True)
    conn.ended = True
    assert conn.peer.read_to_eof() == data + notice


def test_finish_with_linger_drains_the_backlog_then_closes(make_world):
    world = make_world(sendq_bytes=200_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    data = fill(world, conn, 60_000)
    world.flusher.finish(conn.outbox, linger=True)
    conn.ended = True
    assert conn.peer.read_to_eof() == data
    wait_until(lambda: conn.client.sock.fileno() == -1, what="the socket to be closed")


def test_finish_without_linger_closes_at_once(make_world):
    world = make_world(sendq_bytes=200_000)
    conn = world.connect(admit=False, register=False, session=False, sndbuf=SMALL_SNDBUF)
    data = fill(world, conn, 60_000)
    world.flusher.finish(conn.outbox, linger=False)
    conn.ended = True
    world.settle()
    assert conn.client.sock.fileno() == -1
    received = conn.peer.read_to_eof()
    assert data.startswith(received) and len(received) < len(data)  # the backlog is dropped


def test_finish_with_nothing_pending_closes(world):
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.submit(conn.outbox, b"bye\r\n")
    world.flusher.finish(conn.outbox, linger=True)
    conn.ended = True
    assert conn.peer.read_to_eof() == b"bye\r\n"


@pytest.mark.parametrize("linger", [True, False])
def test_finish_twice_is_harmless(world, linger):
    conn = world.connect(admit=False, register=False, session=False)
    world.flusher.finish(conn.outbox, linger=linger)
    world.flusher.finish(conn.outbox, linger=linger)
    conn.ended = True
    world.flusher.submit(conn.outbox, b"after close\r\n")
    assert conn.peer.read_to_eof() == b""
    world.settle()  # the flusher survived all of it
