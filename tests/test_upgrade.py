"""Upgrade without dropping anyone (docs/protocol.md §9, chatd/upgrade.py): real processes.

``chatctl upgrade`` (and SIGUSR2) against a real chatd with real clients mid-traffic: every
client stays connected, every line arrives exactly once and in order across the handover, a
half-sent line arrives whole, a client that never reads keeps its backlog (neither lost nor
doubled), and the new process serves new connections and the admin socket. And the ways it
can fail: the old process serves on, chatctl exits 1 with the reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ChatClient, wait_gone
from faults import wait_until
from test_chatctl import ctl

UPGRADED = re.compile(r"upgraded: pid (\d+) -> (\d+), version (\S+) -> (\S+), (\d+) clients? kept")
LIMITS = {"rate": 5000, "burst": 1000, "max_clients_per_ip": 100, "sendq_bytes": 16_000_000,
          "recvq_bytes": 32_000_000, "max_line_bytes": 4096}
PAD = "x" * 1500  # long lines, so that a client that never reads gets a backlog quickly


def upgrade(server, *args: str) -> re.Match:
    """``chatctl upgrade`` must succeed; the server object follows the new pid."""
    out = ctl(server, "upgrade", *args, timeout=60).strip()
    m = UPGRADED.fullmatch(out)
    assert m, out
    assert int(m[1]) == server.pid, (m[1], server.pid)
    server.succeeded_by(int(m[2]))
    return m


def send_paced(client: ChatClient, word: str, count: int, gap: float = 0.01,
               pad: str = PAD) -> threading.Thread:
    """``count`` lines ``WORD K PAD`` from ``client`` on a thread (lines_of reads them back)."""
    def body():
        for k in range(count):
            client.send_line(f"{word} {k} {pad}".rstrip())
            time.sleep(gap)  # pacing only: the upgrade lands mid-traffic

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def lines_of(client: ChatClient, sender: str) -> list[int]:
    """The sequence numbers of ``sender``'s lines that ``client`` received, in order."""
    prefix = f"<{sender}> {sender} "
    return [int(line[len(prefix):].split()[0]) for line in client.received
            if line.startswith(prefix)]


def rename(client: ChatClient, nick: str) -> None:
    """``/nick`` amid other clients' notices."""
    client.send_line(f"/nick {nick}")
    client.wait_for(f"*** you are now {nick}")
    client.nick = nick


def fds_and_threads(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def sendq(server, nick: str) -> int:
    rows = json.loads(ctl(server, "--json", "list"))
    return next(row["sendq"] for row in rows if row["nick"] == nick)


def test_upgrade_mid_traffic_keeps_every_client_and_every_line(chatd):
    """50 clients in three rooms: 5 senders paced, one sending half a line before the
    upgrade and the rest after, one that never reads with a backlog (a paste bigger than the
    kernel's socket buffers, in a room of its own with the paster)."""
    server = chatd(limits=LIMITS)
    clients = server.connect_many(49)
    senders, half, paster, watchers = clients[:5], clients[5], clients[6], clients[7:]
    for k, client in enumerate(senders):
        rename(client, f"s{k}")
    rename(half, "half")
    rooms = {}
    for k, client in enumerate([*senders, half, *watchers]):
        rooms[client] = "alpha" if k % 2 == 0 else "beta"
        client.join(rooms[client])
    slow = server.connect(rcvbuf=4096)  # the 50th: joins gamma, then never reads
    rename(slow, "slow")
    slow.join("gamma")
    rename(paster, "paster")
    paster.join("gamma")
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    pasted = (wmem_max + 2_000_000) // 1000
    body = "p" * 990
    count = 120
    alpha_senders = [f"s{k}" for k in range(0, 5, 2)]
    beta_senders = [f"s{k}" for k in range(1, 5, 2)]
    watcher = next(c for c in watchers if rooms[c] == "alpha")
    watcher.send_line("/who")
    who_before = watcher.wait_for(lambda line: line.startswith("*** in alpha: "))
    threads = [send_paced(client, client.nick, count) for client in senders]
    watcher.wait_for(lambda line: line.startswith("<s0> s0 20 "), timeout=10)
    paster.send_raw(b"".join(f"{k:07d} {body}\n".encode() for k in range(pasted)))
    wait_until(lambda: sendq(server, "slow") > 0, 20, "a backlog for the client that never reads")
    half.send_raw(b"half a li")
    old = server.proc
    m = upgrade(server)
    assert m[5] == "50", m[0]
    half.send_raw(b"ne, whole\r\n")
    for thread in threads:
        thread.join(30)
    assert old.wait(10) == 0  # the old process is gone, cleanly
    for client in [*watchers, half, *senders]:
        room_senders = alpha_senders if rooms[client] == "alpha" else beta_senders
        for sender in room_senders:
            if sender != client.nick:
                if count - 1 not in lines_of(client, sender):  # not read on the way already
                    client.wait_for(lambda line, s=sender: line.startswith(f"<{s}> {s} {count - 1} "),
                                    timeout=20)
                assert lines_of(client, sender) == list(range(count)), (client, sender)
    neighbour = next(c for c in watchers if rooms[c] == rooms[half])
    neighbour.saw("<half> half a line, whole")
    assert [line for line in neighbour.received if line.startswith("<half> ")] == [
        "<half> half a line, whole"]
    slow.wait_for(f"<paster> {pasted - 1:07d} {body}", timeout=30)  # the backlog, and the rest
    got = [line for line in slow.received if line.startswith("<paster> ")]
    assert got == [f"<paster> {k:07d} {body}" for k in range(pasted)]  # none lost, none twice
    watcher.send_line("/who")
    assert watcher.wait_for(lambda line: line.startswith("*** in alpha: ")) == who_before
    newcomer = server.connect()  # the new process accepts, greets, and knows everyone
    assert newcomer.join("alpha") == len([c for c in rooms if rooms[c] == "alpha"]) + 1
    status = json.loads(ctl(server, "--json", "status"))
    assert status["pid"] == server.pid and status["clients"] == 51, status
    resumed = server.wait_event("resumed")
    assert resumed["clients"] == 50 and resumed["old_pid"] == old.pid, resumed


def test_ten_upgrades_in_a_row_with_traffic_leak_nothing(chatd):
    server = chatd(limits=LIMITS)
    alice, bob = server.connect_many(2)
    rename(alice, "alice")
    bob.wait_for(lambda line: line.endswith(" is now known as alice"))
    figures = []
    for k in range(10):
        alice.send_line(f"before {k}")
        old = int(upgrade(server)[1])
        alice.send_line(f"after {k}")
        bob.wait_for(f"<alice> after {k}", timeout=10)
        # chatctl is answered at the commit; the new process closes its channel to the old one
        # once it serves, and the old one exits only then: count after that
        assert wait_gone(old, 10), f"the old chatd {old} is still there"
        figures.append(fds_and_threads(server.pid))
    said = [line for line in bob.received if line.startswith("<alice> ")]
    assert said == [f"<alice> {when} {k}" for k in range(10) for when in ("before", "after")]
    assert len(set(figures)) == 1, figures  # descriptors and threads: the same every time
    bob.send_line("/who")
    bob.expect("*** in lobby: alice, " + bob.nick)


def test_sigusr2_upgrades_too(chatd):
    server = chatd()
    alice = server.connect()
    old = server.proc
    old.send_signal(signal.SIGUSR2)
    event = server.wait_event("resumed", timeout=20)
    assert event["old_pid"] == old.pid
    assert old.wait(10) == 0
    # the new process logs ``resumed`` just before ``listening``: wait for the latter too
    server.succeeded_by(server.wait_event("listening", pid=lambda p: p != old.pid)["pid"])
    alice.send_line("/who")
    alice.expect(f"*** in lobby: {alice.nick}")
    assert server.connect().nick != alice.nick


def _refused(server, *args: str) -> str:
    """``chatctl upgrade`` fails with exit 1; the old process serves on; returns stderr."""
    pid = server.pid
    alice = server.connect()
    err = ctl(server, "upgrade", *args, status=1, timeout=60)
    assert err.startswith("chatctl: ") and err.count("\n") == 1, err
    assert server.proc.poll() is None and server.pid == pid
    alice.send_line("/who")  # the same process, serving
    alice.expect(f"*** in lobby: {alice.nick}")
    bob = server.connect()
    alice.expect(f"*** {bob.nick} joined lobby")
    assert json.loads(ctl(server, "--json", "status"))["pid"] == pid
    server.wait_event("upgrade_failed")
    return err


def test_an_invalid_config_file_fails_the_upgrade_and_the_old_chatd_serves_on(chatd):
    server = chatd()
    server.config_path.write_text("[limits]\nrate = -1\n")
    err = _refused(server)
    assert "rate" in err, err


def stand_in(version: str, *lines: str) -> str:
    """A stand-in new chatd's script: it says ``hello`` as ``version`` (handover.py), then
    runs ``lines`` with ``channel`` at hand."""
    return "\n".join([
        "import os, signal, sys",
        "from chatd.handover import READABLE_STATE_VERSIONS, Channel",
        "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])",  # for sigwait()
        "channel = Channel.from_fd(int(os.environ['CHATD_UPGRADE_FD']))",
        f"channel.send({{'type': 'hello', 'pid': os.getpid(), 'version': {version!r},",
        "              'state_versions': list(READABLE_STATE_VERSIONS)})",
        *lines])


def executable(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_chatd_that_fails_at_import_fails_the_upgrade(chatd, tmp_path):
    broken = executable(tmp_path, "chatd-broken", "try:\n    import chatd_is_not_installed_here\n"
                        "except ImportError as exc:\n    raise SystemExit(f'ImportError: {exc}')")
    server = chatd(env={"CHATD_UPGRADE_EXEC": broken})
    err = _refused(server)
    assert "exited with status 1 before it was ready" in err, err


def test_a_chatd_that_hangs_fails_the_upgrade(chatd, tmp_path):
    hung = executable(tmp_path, "chatd-hung", "import time\ntime.sleep(600)")
    server = chatd(env={"CHATD_UPGRADE_EXEC": hung})
    started = time.monotonic()
    err = _refused(server, "--wait", "1")
    assert "no answer within 1 s" in err, err
    assert time.monotonic() - started < 20


def test_a_chatd_that_crashes_after_the_freeze_fails_the_upgrade(chatd, tmp_path):
    """The new chatd takes the state (the old one has frozen its sessions and its output by
    then) and dies: everything thaws, output included (chat goes on in _refused), and a later
    shutdown still reaches every client."""
    crashing = executable(tmp_path, "chatd-crashing", stand_in(
        "crashing",
        "channel.receive(10, ('state',))",
        "sys.exit('crashed while taking over')"))
    server = chatd(env={"CHATD_UPGRADE_EXEC": crashing})
    err = _refused(server)
    assert "exited with status 1 before it was ready" in err, err
    server.wait_event("upgrade_frozen")
    alice = server.connect()
    server.proc.send_signal(signal.SIGTERM)
    assert "*** server shutting down" in alice.expect_closed()
    assert server.proc.wait(10) == 0
    assert not server.find_events("sessions_left")


def test_the_old_chatd_exits_once_the_new_one_serves(chatd, tmp_path):
    """After the commit the old process waits for ``serving`` (upgrade.py: its exit, thousands
    of threads torn down, would take CPU from the new one catching up). A stand-in new chatd
    that says it only when told to shows both halves: not before, and promptly after."""
    slow = executable(tmp_path, "chatd-slow-to-serve", stand_in(
        "slow",
        "state = channel.receive(10, ('state',))",
        "fds = channel.receive_fds(state['fds'], 10)",
        "channel.send({'type': 'ready'})",
        "channel.receive(10, ('commit',))",
        "signal.sigwait([signal.SIGUSR1])",
        "channel.send({'type': 'serving'})",
        "channel.close()",  # as chatd does (upgrade.Takeover.serving)
        "signal.pause()"))
    server = chatd(env={"CHATD_UPGRADE_EXEC": slow})
    server.connect()
    old = server.proc
    upgrade(server)  # chatctl is answered at the commit
    with pytest.raises(subprocess.TimeoutExpired):  # a second of it: it waits, and would 5 s
        old.wait(1)
    os.kill(server.pid, signal.SIGUSR1)
    assert old.wait(3) == 0  # well before upgrade.SERVING_SECONDS


def test_the_pidfile_moves_to_the_new_process(chatd, tmp_path):
    pidfile = tmp_path / "chatd.pid"
    server = chatd(args=["--pidfile", str(pidfile)])
    assert int(pidfile.read_text()) == server.pid
    upgrade(server)
    assert int(pidfile.read_text()) == server.pid
    server.terminate()
    assert wait_gone(server.pid, 5)
    assert not pidfile.exists()
