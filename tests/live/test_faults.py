"""Fault injection against a live chatd: broken peers, signal storms, crashes.

Each test injects one kind of fault and checks the two things that matter: chatd goes on
serving well-behaved clients (nothing lost, nobody else dropped), and whatever the fault cost
(threads, descriptors, temporary files) is given back. The number of faults each test injected
goes to the figures table printed at the end of the run. A hostile local environment (an admin
socket directory others can write, full and read-only disks): test_faults_environment.py.

Not here because they already have their test:

- EMFILE during accept (RLIMIT_NOFILE lowered on the running daemon):
  tests/live/test_limits.py::test_accept_survives_running_out_of_file_descriptors
- a client that never reads at all:
  tests/live/test_fanout.py::test_client_that_never_reads_does_not_stall_the_room

Tests that need root (TCP_REPAIR, pidfd_getfd on the daemon) skip with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support.admin import Admin
from support.client import ChatClient
from support.daemon import toml_dumps
from support.display import check_line
from support.faults import ROOT, Swarm, can_vanish, in_flight, server_socket, ss_established, vanish
from support.figures import faults
from support.procfs import proc_figures, settle
from support.sockets import rst_close
from support.traffic import run_in_threads
from support.waiting import wait_until


def lines_of(client: ChatClient, timeout: float = 15.0) -> list[str]:
    """Everything the client has been sent so far (a /who round trip), checked display-safe."""
    return [check_line(line, repr(client)) for line in client.sync(timeout)]


# -- broken peers ------------------------------------------------------------------------------


def test_resets_mid_line_leave_the_room_served(chatd, book):
    """50 clients send half a line and reset (SO_LINGER 0): the half lines are never delivered,
    each reset is announced once, and the daemon gives back every thread and socket."""
    n = 50
    srv = chatd(limits={"max_clients_per_ip": 100})
    watcher = srv.connect()
    admin = Admin(srv.admin_socket)
    admin.result("status")  # its connection thread exists: part of the baseline
    baseline = proc_figures(srv.proc.pid)
    victims = [srv.connect() for _ in range(n)]
    sent = 0
    for i, victim in enumerate(victims):
        victim.send_line(f"complete {i}")
        victim.sync()
        half = f"half-line-{i} never ends".encode()
        victim.send_raw(half)
        sent += len(f"complete {i}\n/who\n") + len(half)
    wait_until(lambda: sum(c["bytes_in"] for c in admin.result("list")) == sent,
               what="chatd to have read every half line")
    for victim in victims:
        victim.reset()
    settle(srv.proc.pid, baseline, what="chatd after 50 resets")
    seen = lines_of(watcher)
    for victim in victims:
        # Mostly "connection reset"; "connection closed" when the flusher's send to the victim
        # met the RST first (the kernel reports it once: the session's recv then sees EOF).
        about = [line for line in seen if f" {victim.nick} " in line]
        assert about[0] == f"*** {victim.nick} joined lobby" and len(about) == 2, about
        assert re.fullmatch(rf"\*\*\* {victim.nick} left lobby \(connection (reset|closed)\)",
                            about[1]), about
    assert not [line for line in seen if "half-line" in line], "a half line was delivered"
    probe = srv.connect()
    probe.send_line("after the resets")
    watcher.wait_for(f"<{probe.nick}> after the resets")
    faults(book, "client reset mid-line (SO_LINGER 0)", n)


@pytest.mark.skipif(not can_vanish(), reason="TCP_REPAIR (a silent close) needs CAP_NET_ADMIN")
def test_half_open_connections_are_reclaimed_by_idle_timeout(chatd, book):
    """20 peers vanish without FIN or RST (power cut): nothing ever arrives from them, so
    only idle_timeout can tell. Each is disconnected as idle and its thread and socket freed."""
    n = 20
    srv = chatd(limits={"idle_timeout": 1.0, "max_clients_per_ip": 100})
    baseline = proc_figures(srv.proc.pid)
    clients = []
    for i in range(n):  # a room each, so no one's departure notice goes to another dead peer
        client = srv.connect()
        client.join(f"alone{i}")
        clients.append(client)
    ids = [srv.client_id(c) for c in clients]
    wait_until(lambda: not in_flight(srv.port), what=lambda: f"quiet: {in_flight(srv.port)}")
    for client in clients:
        vanish(client.sock)
    wait_until(lambda: len(srv.find_events("client_disconnected", reason="idle timeout")) == n,
               timeout=20, what=lambda: f"{n} idle-timeout disconnects, got "
               f"{[(e['client_id'], e['reason']) for e in srv.find_events('client_disconnected')]}")
    assert {e["client_id"] for e in srv.find_events("client_disconnected")} == set(ids)
    settle(srv.proc.pid, baseline, what="chatd after the half-open peers")
    srv.connect().expect_silence()
    faults(book, "half-open peer (silent vanish), idle_timeout", n)


@pytest.mark.skipif(not ROOT or not can_vanish(), reason="needs root (pidfd_getfd, TCP_REPAIR)")
def test_keepalive_is_on_and_reclaims_a_vanished_peer(chatd, book):
    """With idle_timeout off, TCP keepalive is what reclaims a half-open connection. chatd
    turns it on for every client socket (60 s idle, 6 probes 10 s apart); the test reads
    that from chatd's own socket, then shortens the idle time to 1 s rather than wait a minute,
    and a peer that vanished is detected by the keepalive probe."""
    srv = chatd()
    clients = srv.connect_many(3)
    # ss shows one timer per socket: a retransmit timer hides keepalive while data is in flight
    wait_until(lambda: not in_flight(srv.port), what=lambda: f"quiet: {in_flight(srv.port)}")
    table = ss_established(srv.port)
    assert len(table) == 3 and all("timer:(keepalive," in line for line in table), table
    theirs = server_socket(srv.proc.pid, clients[0].sock)
    try:
        assert theirs.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert (theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == (60, 10, 6)
        theirs.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        theirs.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    finally:
        theirs.close()  # our duplicate only; chatd's descriptor stays open
    client_id = srv.client_id(clients[0])
    vanish(clients[0].sock)
    srv.wait_event("client_disconnected", timeout=15, client_id=client_id,
                   reason="connection reset")
    clients[1].expect(f"*** {clients[0].nick} left lobby (connection reset)")
    faults(book, "half-open peer, TCP keepalive probe", 1)


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_thousand_clients_connect_and_vanish_at_once(chatd, book):
    """1,000 connections arrive in a burst and all go at once (half FIN, half RST), without
    reading their greeting: every one is admitted, announced, cleaned up and announced gone."""
    n = 1000
    _raise_nofile(n + 200)  # ours; chatd inherits the same limit (it needs n + a few)
    srv = chatd(limits={"max_clients_per_ip": n + 10, "max_clients": n + 10})
    watcher = srv.connect()
    admin = Admin(srv.admin_socket)
    admin.result("status")  # its connection thread exists: part of the baseline
    baseline = proc_figures(srv.proc.pid)

    def connect(_):
        return [socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                for _ in range(n // 8)]

    socks = [s for batch in run_in_threads(connect, range(8), timeout=120) for s in batch]
    wait_until(lambda: admin.result("status")["clients"] == n + 1, timeout=60,
               what=f"{n} clients admitted")
    peak = proc_figures(srv.proc.pid)
    for i, sock in enumerate(socks):
        if i % 2:
            rst_close(sock)
        else:
            sock.close()
    settle(srv.proc.pid, baseline, timeout=60, what=f"chatd after {n} clients vanished")
    assert admin.result("status")["clients"] == 1
    wait_until(lambda: len(srv.find_events("client_disconnected")) == n, timeout=30,
               what=f"{n} client_disconnected events")
    seen = watcher.sync(timeout=30)
    joined = [line for line in seen if re.fullmatch(r"\*\*\* guest-\d+ joined lobby", line)]
    left = [line for line in seen
            if re.fullmatch(r"\*\*\* guest-\d+ left lobby \(connection (reset|closed)\)", line)]
    assert (len(joined), len(left), len(seen)) == (n, n, 2 * n), seen[-10:]
    faults(book, "connect and vanish at once (1,000 clients)", n,
           peak_threads=peak.threads, peak_fds=peak.fds)


def test_client_that_stops_reading_mid_broadcast(chatd, book):
    """A client reads the start of a flood (chat lines and admin broadcasts), then stops. It is
    dropped with `sendq exceeded`; three readers get every line, in order, exactly once.

    The flood must outgrow what the kernel buffers for the stalled client (sndbuf_bytes, which
    Linux doubles; up to tcp_wmem's maximum, about 3.3 MB here, if it were autotuned) plus
    sendq_bytes. Flood control paces the sender at 1 MB/s, and sendq_bytes is 1 MiB, so a
    reader falls behind far enough to be dropped only if it is starved for over a second.
    """
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    size, sendq, admin_notices = 1000, 1024 * 1024, 200
    lines = (wmem_max + sendq) // size + 500
    srv = chatd(limits={"rate": 1000.0, "burst": 1000, "sendq_bytes": sendq,
                        "recvq_bytes": 64 * 1024 * 1024})
    sender, *readers = srv.connect_many(4)
    stalled = srv.connect(rcvbuf=4096)
    for client in (sender, *readers):
        client.expect(f"*** {stalled.nick} joined lobby")
    stalled_id = srv.client_id(stalled)
    admin = Admin(srv.admin_socket)
    pad = "p" * (size - 20)
    gone = f"*** {stalled.nick} left lobby (sendq exceeded)"

    def flood(_):
        sender.send_raw(b"".join(f"m {i:06d} {pad}\n".encode() for i in range(lines)))

    def broadcasts(_):
        for i in range(admin_notices):
            admin.result("broadcast", text=f"notice {i}")

    def read_all(reader):
        got, notices, left = [], [], 0
        while len(got) < lines or len(notices) < admin_notices or not left:
            line = check_line(reader.read_line(timeout=60), repr(reader))
            if line.startswith(f"<{sender.nick}> m "):
                got.append(int(line.split()[2]))
            elif line.startswith("*** [admin] notice "):
                notices.append(int(line.rsplit(" ", 1)[1]))
            elif line == gone:
                left += 1
            else:
                raise AssertionError(f"{reader!r}: unexpected {line!r}")
        return got, notices, left

    workers = threading.Thread(target=run_in_threads, daemon=True,
                               args=(flood, [0], 120))
    workers.start()
    for _ in range(5):  # the stalled client takes part in the flood for a moment...
        assert stalled.read_line().startswith(f"<{sender.nick}> m ")
    # ...then reads no more, while admin notices join the flood and the readers read it all
    results = run_in_threads(lambda job: job[0](job[1]),
                             [(broadcasts, 0), *((read_all, r) for r in readers)], timeout=180)
    workers.join(60)
    for got, notices, left in results[1:]:
        assert got == list(range(lines)) and notices == list(range(admin_notices))
        assert left == 1
    srv.wait_event("client_disconnected", client_id=stalled_id, reason="sendq exceeded")
    for reader in readers:
        reader.expect_silence()
    faults(book, "client stops reading mid-broadcast", 1, flood_bytes=lines * size)


# -- signals -----------------------------------------------------------------------------------


def _write_config(path: Path, sections: dict) -> None:
    """Replace the config file atomically: chatd must never read half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(toml_dumps(sections))
    os.replace(tmp, path)


def test_sighup_storm_while_chatting(chatd, book):
    """50 SIGHUPs (and 10 admin reloads among them), each changing limits and MOTD, while four
    clients chat: no message lost or duplicated, no client dropped, the last config wins."""
    talkers, per_round, rounds = 4, 5, 50
    base = {"limits": {"rate": 200.0, "burst": 50}, "server": {"motd": "round -1"}}
    srv = chatd(**base)
    clients = srv.connect_many(talkers)
    admin = Admin(srv.admin_socket)
    sent = reloads = 0

    def reloaded():  # every reload so far has been logged (waiting also keeps signals apart)
        return len(srv.find_events("config_reloaded")) >= reloads

    for r in range(rounds):
        for client in clients:
            client.send_raw(b"".join(f"{client.nick} {r * per_round + k}\n".encode()
                                     for k in range(per_round)))
            sent += per_round
        limits = {"rate": 200.0 + 100 * (r % 2), "burst": 50 + r}
        _write_config(srv.config_path, {"limits": limits, "server": {"motd": f"round {r}"}})
        srv.proc.send_signal(signal.SIGHUP)
        reloads += 1
        wait_until(reloaded, timeout=15, what=f"reload {reloads}")
        if r % 5 == 4:
            assert admin.result("reload")["reloaded"] is True
            reloads += 1

    total = per_round * rounds

    def read_all(client):
        seen = {c.nick: -1 for c in clients if c is not client}
        for _ in range(total * (talkers - 1)):
            line = check_line(client.read_line(timeout=30), repr(client))
            author, nick, index = line.split()
            assert author == f"<{nick}>", f"{client!r}: unexpected {line!r}"
            assert int(index) == seen[nick] + 1, f"{client!r}: {line!r} after #{seen[nick]}"
            seen[nick] = int(index)
        client.expect_silence()
        return sum(v + 1 for v in seen.values())

    delivered = sum(run_in_threads(read_all, clients, timeout=120))
    assert delivered == sent * (talkers - 1)
    assert not srv.find_events("client_disconnected")
    assert not srv.find_events("config_reload_failed")
    assert admin.result("status")["clients"] == talkers
    srv.connect(motd=[f"round {rounds - 1}"])
    wait_until(reloaded, what=f"{reloads} reloads logged")
    assert len(srv.find_events("config_reloaded")) == reloads == rounds + rounds // 5
    faults(book, "SIGHUP storm while chatting (reloads)", reloads,
           messages_sent=sent, deliveries=delivered)


def test_sigterm_while_200_clients_are_mid_send(chatd, book):
    """SIGTERM while 200 clients are each in the middle of sending lines: exit 0 within the
    shutdown bound, every client told and closed, no traceback (the fixture checks that)."""
    n = 200
    srv = chatd(limits={"max_clients_per_ip": n + 10, "rate": 1000.0, "burst": 1000})
    admin = Admin(srv.admin_socket)
    clients = []
    for i in range(n):
        client = srv.connect()
        client.join(f"r{i}")  # a room each: the load is input, not fan-out
        clients.append(client)
    swarm = Swarm([c.sock for c in clients])
    swarm.start()
    wait_until(lambda: admin.result("status")["lines_in"] >= n * 5, timeout=30,
               what="every client sending")
    admin.close()
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    status = srv.proc.wait(15)
    elapsed = time.monotonic() - started
    swarm.join(timeout=15)
    assert status == 0
    assert elapsed < 5.0, f"exit took {elapsed:.2f}s (chatd's own bound is 1.5s)"
    assert all(swarm.ended), f"{swarm.ended.count(None)} clients were not closed"
    told = [b"*** server shutting down\r\n" in d for d in swarm.data]
    assert all(told), f"{told.count(False)} of {n} clients were not told; ends: " \
                      f"{[e for e, t in zip(swarm.ended, told) if not t][:10]}"
    assert not srv.find_events("client_disconnected", reason="excess flood")
    assert srv.wait_event("shutdown")
    faults(book, "SIGTERM with 200 clients mid-send", 1, clients=n,
           lines_sent=sum(swarm.sent), exit_seconds=round(elapsed, 2))


def test_kill_9_then_restart_keeps_bans(chatd, book):
    """kill -9 leaves the pidfile and the admin socket behind: the next chatd replaces both
    and starts with the bans the first one saved."""
    base = tempfile.mkdtemp(prefix="chatd-k-")  # short: a socket path must fit in 108 bytes
    try:
        pidfile, sock = os.path.join(base, "chatd.pid"), os.path.join(base, "admin.sock")
        args = ["--pidfile", pidfile, "--admin-socket", sock, "--state-dir",
                os.path.join(base, "state")]
        first = chatd(args=args)
        Admin(sock).result("ban", address="127.0.0.9", reason="persisted")
        victim = first.connect()
        first.proc.kill()
        assert first.proc.wait(10) == -signal.SIGKILL
        assert int(Path(pidfile).read_text()) == first.proc.pid and os.path.exists(sock)
        victim.expect_closed()

        second = chatd(args=args)
        assert int(Path(pidfile).read_text()) == second.proc.pid
        status = Admin(sock).result("status")
        assert status["pid"] == second.proc.pid and status["bans"] == 1
        bans = Admin(sock).result("bans")
        assert [(b["address"], b["reason"]) for b in bans] == [("127.0.0.9/32", "persisted")]
        refused = second.connect(source="127.0.0.9", greet=False)
        assert refused.expect_closed() == ["*** error: banned (persisted)"]
        second.connect().expect_silence()
        assert second.terminate() == 0
        assert not os.path.exists(pidfile) and not os.path.exists(sock)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    faults(book, "kill -9 then restart", 1)
