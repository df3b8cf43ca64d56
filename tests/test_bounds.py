"""Memory a remote client can make chatd hold is bounded (issue 22 §2, docs/protocol.md §3).

Each test drives a real chatd over real TCP the way the issue's findings did, scaled down: a
reply queued for a client that never reads counts against its ``sendq_bytes`` from the moment
it is queued; tails of empty rooms are evicted past ``history_idle_rooms`` /
``history_idle_bytes`` and come back from the store on the next join; scrapes closer together
than ``metrics_interval`` are answered from the last collection.
"""

from __future__ import annotations

import socket
import time

import pytest

from conftest import ChatClient

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
    from faults import server_socket

    return server_socket(pid, client.sock)


# -- metrics scrapes ---------------------------------------------------------------------------


def test_scrapes_within_metrics_interval_get_the_last_collection(chatd):
    """A scrape less than ``metrics_interval`` (1 s by default) after a collection gets that
    collection, though traffic flowed in between; one after it gets a new one (on 8fc668b
    every scrape walked every client: 16 looping scrapers with 3,000 clients took 92 % of a
    core)."""
    from test_metrics import scrape, start, value, wait_metric

    srv, port = start(chatd, interval=None, limits={"rate": 1000.0, "burst": 1000})
    talker, listener = srv.connect_many(2)
    sent = 2  # connect_many: a /who from each
    for attempt in range(5):
        # a fresh collection: one that has every line handled so far (sync: all of them)
        first = wait_metric(port, "chatd_lines_received_total", lambda v: v == sent)
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
