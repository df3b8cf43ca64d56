"""Upgrade without dropping anyone (docs/protocol.md §9, chatd/lifecycle/upgrade.py, chatd/lifecycle/reexec.py):
real processes.

``chatctl upgrade`` (and SIGUSR2) against a real chatd with real clients mid-traffic: every
client stays connected, every line arrives exactly once and in order across the upgrade, a
half-sent line arrives whole, a client that never reads keeps its backlog (neither lost nor
doubled), and the new code serves new connections and the admin socket, in the same process
(exec in place: same pid, named ``chatd``). And the ways it can fail: the dry start refuses,
or the exec itself fails; chatd serves on as it was, chatctl exits 1 with the reason.
(Terminal, --daemon: test_upgrade_exec.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

from support.chatctl import ctl
from support.client import ChatClient
from support.traffic import lines_of, send_paced
from support.waiting import wait_gone, wait_until

UPGRADED = re.compile(r"upgraded: pid (\d+) -> (\d+), version (\S+) -> (\S+), (\d+) clients? kept")
LIMITS = {"rate": 5000, "burst": 1000, "max_clients_per_ip": 100, "sendq_bytes": 16_000_000,
          "recvq_bytes": 32_000_000, "max_line_bytes": 4096}
PAD = "x" * 1500  # long lines, so that a client that never reads gets a backlog quickly


def upgrade(server, *args: str) -> re.Match:
    """``chatctl upgrade`` must succeed, in place: the same pid, still named chatd."""
    out = ctl(server, "upgrade", *args, timeout=60).strip()
    m = UPGRADED.fullmatch(out)
    assert m, out
    assert int(m[1]) == int(m[2]) == server.pid, (m[0], server.pid)
    assert comm(server.pid) == "chatd"
    return m


def comm(pid: int) -> str:
    """The process's name, as ``pgrep -x`` and ``ps -C`` see it."""
    return Path(f"/proc/{pid}/comm").read_text().strip()


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
    threads = [send_paced(client, client.nick, count, pad=PAD) for client in senders]
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
    assert old.poll() is None  # the same process, its new image serving
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
    """Each image upgrades to the next, and holds what the one before held."""
    server = chatd(limits=LIMITS)
    alice, bob = server.connect_many(2)
    rename(alice, "alice")
    bob.wait_for(lambda line: line.endswith(" is now known as alice"))
    threads = fds_and_threads(server.pid)[1]
    figures = []
    for k in range(10):
        alice.send_line(f"before {k}")
        upgrade(server)
        alice.send_line(f"after {k}")
        bob.wait_for(f"<alice> after {k}", timeout=10)
        # chatctl's admin connection, answered by the new image, ends right after: count then
        wait_until(lambda: fds_and_threads(server.pid)[1] == threads, 10,
                   lambda k=k: f"{fds_and_threads(server.pid)} after upgrade {k}, "
                               f"{threads} threads")
        figures.append(fds_and_threads(server.pid))
    said = [line for line in bob.received if line.startswith("<alice> ")]
    assert said == [f"<alice> {when} {k}" for k in range(10) for when in ("before", "after")]
    assert len(set(figures)) == 1, figures  # descriptors and threads: the same every time
    assert len(server.find_events("resumed", via="exec", old_pid=server.pid)) == 10
    bob.send_line("/who")
    bob.expect("*** in lobby: alice, " + bob.nick)


def test_sigusr2_upgrades_too(chatd):
    server = chatd()
    alice = server.connect()
    server.proc.send_signal(signal.SIGUSR2)
    event = server.wait_event("resumed", timeout=20)
    assert event["old_pid"] == server.pid and event["via"] == "exec"
    # the new image logs ``resumed`` just before ``listening``: wait for the latter too
    wait_until(lambda: len(server.find_events("listening", pid=server.pid)) == 2, 10,
               "the new image listening")
    assert server.proc.poll() is None and comm(server.pid) == "chatd"
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
    assert not server.find_events("upgrade_frozen")  # the dry start refused: nothing disturbed


def test_a_listener_the_new_config_adds_on_an_address_in_use_fails_the_upgrade(chatd):
    """Metrics turned on in the config file, on a port someone else holds: the running chatd
    binds what the new config adds before anything is disturbed (reexec.py), so this fails
    there and not in the new image after exec, where it would take every client along."""
    server = chatd()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server.config_path.write_text(f"[metrics]\nmetrics_port = {port}\n")
        err = _refused(server)
    assert f"cannot listen on 127.0.0.1:{port} (metrics)" in err, err
    assert not server.find_events("upgrade_frozen")


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
    assert "ImportError: No module named 'chatd_is_not_installed_here'" in err, err
    assert not server.find_events("upgrade_frozen")  # the dry start refused: nothing disturbed


def test_a_chatd_that_hangs_fails_the_upgrade(chatd, tmp_path):
    hung = executable(tmp_path, "chatd-hung", "import time\ntime.sleep(600)")
    server = chatd(env={"CHATD_UPGRADE_EXEC": hung})
    started = time.monotonic()
    err = _refused(server, "--wait", "1")
    assert "no answer within 1 s" in err, err
    assert time.monotonic() - started < 20


def test_an_executable_gone_after_its_dry_start_fails_the_upgrade_and_thaws(chatd, tmp_path):
    """The dry start succeeds, and the executable is gone when chatd execs it (the package
    was being replaced, say): execve fails after the freeze, so everything thaws, output
    included (chat goes on in _refused), and a later shutdown still reaches every client."""
    vanishing = executable(tmp_path, "chatd-vanishing", (
        "import json, os, sys\n"
        "assert os.environ['CHATD_UPGRADE_DRY_START'] == '1'\n"
        "os.unlink(sys.argv[0])\n"
        "print(json.dumps({'dry_start': 'ok', 'version': 'vanishing', 'state_versions': [1]}))"))
    server = chatd(env={"CHATD_UPGRADE_EXEC": vanishing})
    err = _refused(server)
    assert f"cannot run {vanishing}: No such file or directory" in err, err
    server.wait_event("upgrade_frozen")
    server.wait_event("upgrade_resumed")
    alice = server.connect()
    server.proc.send_signal(signal.SIGTERM)
    assert "*** server shutting down" in alice.expect_closed()
    assert server.proc.wait(10) == 0
    assert not server.find_events("sessions_left")


def test_a_crash_after_the_exec_is_not_undone_but_chatctl_hears_of_it(chatd, tmp_path):
    """The trade-off of exec in place (reexec.py): new code that passes its dry start and
    then fails while taking over takes the clients with it; chatctl gets the reason."""
    crashing = executable(tmp_path, "chatd-crashing", (
        "import json, os, sys\n"
        "if os.environ.get('CHATD_UPGRADE_DRY_START'):\n"
        "    print(json.dumps({'dry_start': 'ok', 'version': 'crashing', 'state_versions': [1]}))\n"
        "    sys.exit(0)\n"
        "from chatd.lifecycle.reexec import ExecTakeover\n"
        "ExecTakeover.from_environment().fail('crashed while taking over')\n"
        "sys.exit(1)"))
    server = chatd(env={"CHATD_UPGRADE_EXEC": crashing})
    alice = server.connect()
    err = ctl(server, "upgrade", status=1, timeout=60)
    assert "the new chatd failed after exec: crashed while taking over" in err, err
    assert server.proc.wait(10) == 1
    alice.expect_closed()


def test_a_chatd_without_a_dry_start_is_refused(chatd, tmp_path):
    """A chatd that starts but does not confirm a dry start (one from before exec in place)
    could not take over after exec: refused before anything is disturbed."""
    mute = executable(tmp_path, "chatd-old", "print('chatd 0.0.1')")
    server = chatd(env={"CHATD_UPGRADE_EXEC": mute})
    err = _refused(server)
    assert "did not confirm its dry start" in err, err
    assert not server.find_events("upgrade_frozen")


def test_the_pidfile_names_the_same_live_pid_after_an_upgrade(chatd, tmp_path):
    pidfile = tmp_path / "chatd.pid"
    server = chatd(args=["--pidfile", str(pidfile)])
    pid = server.pid
    assert int(pidfile.read_text()) == pid
    upgrade(server)
    assert int(pidfile.read_text()) == pid == server.pid
    server.terminate()
    assert wait_gone(server.pid, 5)
    assert not pidfile.exists()
