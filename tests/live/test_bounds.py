"""Memory a remote client can make chatd hold is bounded (issue 22 §2, docs/protocol.md §3).

Each test drives a real chatd over real TCP the way the issue's findings did, scaled down: a
reply queued for a client that never reads counts against its ``sendq_bytes`` from the moment
it is queued; tails of empty rooms are evicted past ``history_idle_rooms`` /
``history_idle_bytes`` and come back from the store on the next join; scrapes closer together
than ``metrics_interval`` are answered from the last collection.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from support.client import ChatClient

LINE = "h" * 110  # a history line of ~130 bytes as replayed: /history 1000 is ~130 KB


def fill_history(client: ChatClient, count: int) -> None:
    """``count`` lines in the client's room, all handled when this returns."""
    client.send_raw(b"".join(f"{i:05d} {LINE}\n".encode() for i in range(count)))
    client.sync(timeout=30)


def test_history_asked_by_clients_that_never_read_is_bounded_by_sendq(chatd):
    """Clients that ask ``/history 1000`` nine times and never read are dropped with ``sendq
    exceeded`` (on 8fc668b the replies waited uncounted in the flusher's queue and the kernel's
    autotuned send buffer, and nobody was dropped); a quiet pair keeps chatting meanwhile."""
    srv = chatd(limits={"rate": 100000.0, "burst": 100000})
    writer, alice, bob = srv.connect_many(3)
    alice.join("quiet")
    bob.join("quiet")
    alice.expect(f"*** {bob.nick} joined quiet")
    fill_history(writer, 1000)  # the lobby's, where the silent clients arrive

    silent = [srv.connect(rcvbuf=4096) for _ in range(8)]
    ids = [srv.client_id(client) for client in silent]
    for client in silent:
        client.send_raw(b"/history 1000\n" * 9)
    for n in range(20):  # the quiet pair is served while the silent ones are dropped
        alice.send_line(f"ping {n}")
        bob.expect(f"<{alice.nick}> ping {n}", timeout=10)
        bob.send_line(f"pong {n}")
        alice.expect(f"<{bob.nick}> pong {n}", timeout=10)
    for client_id in ids:
        srv.wait_event("sendq_exceeded", client_id=client_id, timeout=20)
        srv.wait_event("client_disconnected", client_id=client_id, reason="sendq exceeded")
    alice.expect_silence()
    bob.expect_silence()


def test_the_kernel_send_buffer_is_capped(chatd):
    """``sndbuf_bytes`` (131072 by default) is the SO_SNDBUF of every chat connection: what the
    kernel holds for a client is chatd's bound, not TCP autotuning's (up to 4 MB a socket)."""
    srv = chatd()
    client = srv.connect()
    sock = _server_side(srv.proc.pid, client)
    try:
        # Linux doubles the value set (its bookkeeping); autotuning starts at tcp_wmem's default
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 131072
    finally:
        sock.close()
    other = chatd(limits={"sndbuf_bytes": 0})  # 0: the kernel's autotuning, as before
    client = other.connect()
    sock = _server_side(other.proc.pid, client)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) != 2 * 131072
    finally:
        sock.close()


def _server_side(pid: int, client: ChatClient) -> socket.socket:
    from support.faults import server_socket

    return server_socket(pid, client.sock)


# -- metrics scrapes ---------------------------------------------------------------------------


def test_scrapes_within_metrics_interval_get_the_last_collection(chatd):
    """A scrape less than ``metrics_interval`` (1 s by default) after a collection gets that
    collection, though traffic flowed in between; one after it gets a new one (on 8fc668b
    every scrape walked every client: 16 looping scrapers with 3,000 clients took 92 % of a
    core)."""
    from support.metrics import scrape, start, value, wait_metric

    srv, port = start(chatd, interval=None, limits={"rate": 1000.0, "burst": 1000})
    talker, listener = srv.connect_many(2)
    sent = 2  # connect_many: a /who from each
    for attempt in range(5):
        # a fresh collection: one that has every line handled so far (sync: all of them)
        first = wait_metric(port, "chatd_lines_received_total", lambda v, sent=sent: v == sent)
        began = time.monotonic()
        talker.send_line(f"hello {attempt}")
        listener.expect(f"<{talker.nick}> hello {attempt}")
        sent += 1
        second = scrape(port)
        if time.monotonic() - began < 0.9:  # else the machine was too slow: again
            break
    else:
        pytest.fail("never two scrapes within 0.9 s")
    assert value(second, "chatd_lines_received_total") == value(first, "chatd_lines_received_total")
    assert second == first
    wait_metric(port, "chatd_lines_received_total", lambda v: v == sent, timeout=5)


# -- history tails of empty rooms -------------------------------------------------------------


def status(srv) -> dict:
    from support.admin import Admin

    admin = Admin(srv.admin_socket)
    try:
        return admin.result("status")
    finally:
        admin.close()


def walk_rooms(client: ChatClient, names) -> None:
    """Join each room, say one line there, go on: every room is made, given a tail with a
    line, and left empty."""
    for name in names:
        client.join(name)
        client.send_line(f"a line in {name}")
    client.sync(timeout=30)


def test_tails_of_empty_rooms_are_bounded_and_read_back_from_the_store(chatd):
    """Rooms joined and left keep at most ``history_idle_rooms`` tails in memory (on 8fc668b
    every room name ever joined kept its tail: 48,600 names held 65 MB for good); a dropped
    room's history comes back from the store when somebody joins it again."""
    srv = chatd(limits={"rate": 100000.0, "burst": 100000},
                history={"history_on_join": 10, "history_idle_rooms": 20})
    walker, other = srv.connect_many(2)
    walker.join("keep")
    walker.send_line("first line")
    walker.send_line("/me second line")
    walk_rooms(walker, [f"room{i}" for i in range(120)])
    counts = status(srv)
    assert counts["history_idle_tails"] <= 20, counts
    # pinned: the lobby and room119, where the walker is
    assert counts["history_tails"] <= 22, counts
    assert counts["history_tails_dropped"] >= 100, counts
    assert other.join("keep") == 1
    other.expect("*** history of keep (2 lines)")
    assert other.read_line().endswith(f"<{walker.nick}> first line")
    assert other.read_line().endswith(f"* {walker.nick} second line")
    other.expect("*** end of history")


def test_tails_of_empty_rooms_are_bounded_in_bytes(chatd):
    """``history_idle_bytes`` bounds the idle tails' size whatever their number."""
    srv = chatd(limits={"rate": 100000.0, "burst": 100000},
                history={"history_idle_bytes": 20_000})
    walker = srv.connect()
    walker.join("big")
    walker.send_raw(b"".join(f"{i:03d} {'b' * 900}\n".encode() for i in range(30)))  # ~33 KB
    walk_rooms(walker, [f"room{i}" for i in range(40)])
    counts = status(srv)
    assert 0 < counts["history_idle_bytes"] <= 20_000, counts
    assert counts["history_idle_tails"] < 40, counts  # "big" went first, then the oldest


def test_a_slow_history_store_never_holds_the_hub_lock(chatd):
    """A join that has to read a room's history from SQLite does it without the hub lock:
    while the read waits for a database another process has locked, other clients' commands
    that need the hub (/rooms) are answered (on 8fc668b they waited for the read)."""
    import fcntl

    from support.waiting import wait_until

    srv = chatd(limits={"rate": 100000.0, "burst": 100000})
    joiner, other = srv.connect_many(2)
    joiner.send_line("a line, so that the store has a file")
    other.expect(f"<{joiner.nick}> a line, so that the store has a file")
    path = f"{srv.state_dir}/history.sqlite3"
    wait_until(lambda: _rows(path) >= 1, timeout=10, what="the line written to SQLite")
    # SQLite's WAL read locks (bytes 120-127 of the -shm file; chatd's writer, idle, holds
    # none of them): a reader retries until they are free
    fd = os.open(path + "-shm", os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)
        joiner.send_line("/join fresh")  # a new name: its tail is read from the store
        for _ in range(20):  # round trips that need the hub lock, while the join reads
            other.send_line("/rooms")
            other.wait_for(lambda line: line.startswith("*** lobby ("))
            other.sync()
        assert not any(line.startswith("*** you joined") for line in joiner.received), \
            "the join did not wait for the store: the test proves nothing"
    finally:
        os.close(fd)  # and with it the lock
    joiner.wait_for("*** you joined fresh (1 member)", timeout=15)


def _rows(path: str) -> int:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM lines").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
