"""docs/protocol.md §3 limits: flood control, recvq, max_clients, max_clients_per_ip, idle_timeout."""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest
from support.client import ChatClient
from support.sockets import rst_close


def test_pasted_thousand_lines_are_all_delivered_in_order_paced(chatd):
    rate, burst, count = 2000.0, 50, 1000
    srv = chatd(limits={"rate": rate, "burst": burst})
    paster, reader = srv.connect_many(2)
    started = time.monotonic()
    paster.send_raw(b"".join(f"pasted line {i}\n".encode() for i in range(count)))
    for i in range(count):
        reader.expect(f"<guest-1> pasted line {i}", timeout=30)
    elapsed = time.monotonic() - started
    # A token bucket lets through at most burst + rate * t lines in t seconds.
    assert elapsed >= (count - burst) / rate * 0.95, f"not paced: {count} lines in {elapsed:.3f}s"
    paster.expect_silence(timeout=30)  # not disconnected, no error
    reader.expect_silence()
    assert not srv.find_events("excess_flood")


def test_default_rate_paces_after_the_burst(server):
    """Defaults: burst 10, then 5 lines a second. 20 lines take at least about 2 seconds."""
    paster, reader = server.connect_many(2)
    started = time.monotonic()
    paster.send_raw(b"".join(f"n{i}\n".encode() for i in range(20)))
    for i in range(10):
        reader.expect(f"<guest-1> n{i}")
    for i in range(10, 20):
        reader.expect(f"<guest-1> n{i}", timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed >= (20 - 10 - 1) / 5.0 * 0.95, f"not paced: 20 lines in {elapsed:.3f}s"
    reader.expect_silence()


def test_commands_are_paced_not_dropped(chatd):
    srv = chatd(limits={"rate": 50.0, "burst": 5})
    client = srv.connect()
    client.send_raw(b"/who\n" * 40)
    for _ in range(40):
        client.expect("*** in lobby: guest-1")
    client.expect_silence()


def test_excess_flood_disconnects(chatd):
    srv = chatd(limits={"rate": 1.0, "burst": 1, "recvq_bytes": 4096, "max_line_bytes": 1024})
    flooder, witness = srv.connect_many(2)
    flooder_id = srv.client_id(flooder)
    stop = threading.Event()

    def flood():  # in a thread: a server that stops reading would otherwise block sendall
        chunk = b"".join(f"flood {i:04d} {'f' * 80}\n".encode() for i in range(100))
        flooder.sock.settimeout(20)
        try:
            for _ in range(50):  # at most ~460 KB, bounded
                if stop.is_set():
                    return
                flooder.sock.sendall(chunk)
        except OSError:
            pass  # the server closed us: expected

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        witness.wait_for("*** guest-1 left lobby (excess flood)", timeout=15)
        assert all(ln.startswith("<guest-1> flood ") for ln in witness.skipped), witness.skipped
        assert len(witness.skipped) <= 10, "flood control let too much through"
        lines = flooder.expect_closed(timeout=15)
        assert lines[-1:] == ["*** error: excess flood"], lines
        srv.wait_event("excess_flood", client_id=flooder_id)
        srv.wait_event("client_disconnected", client_id=flooder_id, reason="excess flood")
    finally:
        stop.set()
        thread.join(30)
    witness.expect_silence()


def test_max_clients_refuses_with_server_full(chatd):
    srv = chatd(limits={"max_clients": 3})
    clients = srv.connect_many(3)
    refused = srv.connect(greet=False)
    assert refused.expect_closed() == ["*** error: server full"]
    srv.wait_event("client_refused", reason=lambda r: r is not None and "full" in str(r))
    for c in clients:
        c.expect_silence()  # nobody saw a join or a leave

    clients[0].close()
    clients[1].expect("*** guest-1 left lobby (connection closed)")
    srv.wait_event("client_disconnected", client_id=srv.client_id(clients[0]))
    # The slot is free again (retried briefly: it is freed as the session ends, which may be
    # just after the notice went out).
    deadline = time.monotonic() + 5
    while True:
        late = ChatClient().connect(srv.port, greet=False)
        srv.clients.append(late)
        first = late.read_line()
        if first.startswith("*** welcome to ") or time.monotonic() > deadline:
            break
        assert first == "*** error: server full"
        late.expect_closed()
    assert first.startswith("*** welcome to "), first


def test_max_clients_per_ip(chatd):
    srv = chatd(limits={"max_clients_per_ip": 2})
    srv.connect_many(2)
    refused = srv.connect(greet=False)
    assert refused.expect_closed() == ["*** error: too many connections from your address"]
    srv.wait_event("client_refused")
    # Another address on this host is another IP: it gets in.
    other = srv.connect(source="127.0.0.2")
    other.send_line("/who")
    assert other.read_line().startswith("*** in lobby: ")


def test_refused_client_is_not_announced(chatd):
    srv = chatd(limits={"max_clients": 1})
    only = srv.connect()
    refused = srv.connect(greet=False)
    refused.expect_closed()
    only.expect_silence()


def test_idle_timeout_disconnects(chatd):
    srv = chatd(limits={"idle_timeout": 1.0})
    started = time.monotonic()
    client = srv.connect()
    client_id = srv.client_id(client)
    lines = client.expect_closed(timeout=10)
    elapsed = time.monotonic() - started
    assert lines == ["*** error: idle timeout"], lines
    assert elapsed >= 0.95, f"closed after {elapsed:.2f}s, idle_timeout is 1s"
    event = srv.wait_event("client_disconnected", client_id=client_id, reason="idle timeout")
    assert event["duration"] >= 0.9


def test_idle_timeout_is_announced_to_the_room(chatd):
    srv = chatd(limits={"idle_timeout": 2.0})
    idle = srv.connect()
    busy = srv.connect()
    idle.expect("*** guest-2 joined lobby")
    # busy keeps talking (round trips, paced by the default rate limit) until idle is gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = busy.sync()
        if "*** guest-1 left lobby (idle timeout)" in lines:
            break
        assert lines == [], lines
    else:
        pytest.fail("the idle client was not disconnected within 10s")
    assert idle.expect_closed() == ["*** error: idle timeout"]


def test_activity_resets_the_idle_timer(chatd):
    srv = chatd(limits={"idle_timeout": 2.0})
    client = srv.connect()
    started = time.monotonic()
    while time.monotonic() - started < 3.0:  # well past the timeout, busy all along
        client.expect_silence()  # a /who round trip; the rate limit paces these at 5/s
    client.expect_silence()


def test_idle_timeout_zero_means_off(server):
    # With the default (0) a quiet client stays; the other one's paced round trips measure time.
    quiet = server.connect()
    other = server.connect()
    quiet.expect("*** guest-2 joined lobby")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        other.expect_silence()
    quiet.expect_silence()


def test_reset_right_after_connect_does_not_hurt_the_server(server):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port))
        rst_close(s)
    # The server may still be admitting and dropping those as this client arrives.
    churn = re.compile(r"\*\*\* guest-\d+ (joined lobby|left lobby \(connection (reset|closed)\))")
    first, second = server.connect(), server.connect()
    assert all(churn.fullmatch(line) for line in first.sync()), first.received
    second.send_line("still serving")
    first.wait_for(f"<{second.nick}> still serving")
    assert all(churn.fullmatch(line) for line in first.skipped), first.skipped


def test_accept_survives_running_out_of_file_descriptors(server):
    """EMFILE during accept: `accept_failed` is logged, nothing busy-loops or dies, and the
    waiting connection is served once descriptors are available again."""
    early = server.connect()
    soft, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (in_use, hard))
    try:
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # kernel backlog
        server.wait_event("accept_failed", errno=24)
        early.send_line("/rooms")  # the established client is still served
        early.wait_for(lambda line: line.startswith("*** lobby ("))
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    late = ChatClient()
    late.sock = waiting
    server.clients.append(late)
    late.read_greeting(motd=server.motd_lines, server_name=server.server_name)
    if f"*** {late.nick} joined lobby" not in early.received:
        early.wait_for(f"*** {late.nick} joined lobby")
    failures = server.find_events("accept_failed")
    assert len(failures) < 100, "accept_failed must back off, not spin"


def test_a_refused_client_that_writes_at_once_always_gets_its_refusal(chatd):
    """SPEC §3: the refusal line is never lost to a reset. Closing a socket with unread input
    sends an RST, which can destroy the line before the client reads it: `printf 'hi\\n' |
    nc` to a full server got 0 bytes in 2 of 20 tries. Now chatd shuts its side, reads what
    the client sent for a moment, then closes. 100 raw clients and 20 real nc runs."""
    srv = chatd(limits={"max_clients": 1})
    srv.connect()
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(b"hi\n" * 100)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        sock.close()
        assert data == b"*** error: server full\r\n"
    nc = shutil.which("nc")
    if nc is None:
        pytest.skip("nc not found: install the Debian package netcat-openbsd")
    for _ in range(20):
        result = subprocess.run([nc, "127.0.0.1", str(srv.port)], input=b"hi\n",
                                capture_output=True, timeout=10, check=False)
        assert result.stdout == b"*** error: server full\r\n", result
