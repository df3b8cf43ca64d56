"""chatd under a real systemd: the shipped units, installed as systemd/README.md says, in a
minimal Debian booted with systemd-nspawn (tests/support/nspawn.py, tests/support/e2e_build.py).

The container shares the host's network, so the chat clients here are the usual
:class:`support.client.ChatClient` on 127.0.0.1:PORT; ``systemctl``, ``chatctl`` and ``journalctl``
run inside. The units are installed byte for byte (checked); the only test-specific things are
the configuration's port and MOTD, a drop-in moving chatd.socket to the same port, and, in the
tests that say so, drop-ins of the kind an operator would write (a short WatchdogSec, the
admin_group one from the README).

Module fixture ``box``: host checks, cached root file system, wheelhouse, boot, install (about
3 s warm; a cold machine also installs systemd-container + mmdebstrap and builds the root file
system, about 35 s). Function fixture ``fresh``: everything stopped, default config, no test
drop-ins; after the test, the journal of chatd is printed (shown if the test failed) and must
hold no Python traceback.

Skips (with the reason) when not root, without namespaces/cgroups, or when the tools or the
root file system cannot be installed/built (no mirror). Anything else is a failure.
"""

from __future__ import annotations

import json
import re
import socket
import time
import tomllib
from dataclasses import dataclass

import pytest
from support import e2e_build, nspawn
from support.client import ChatClient
from support.irc import IrcClient
from support.paths import REPO, TRACEBACK
from support.traffic import lines_of, send_paced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

UNITS = ("chatd.service", "chatd.socket")
UNIT_DIR = "/etc/systemd/system"
CONFIG = "/etc/chatd/chatd.toml"
STATE_DIR = "/var/lib/chatd"  # StateDirectory=chatd
CHATCTL = "/opt/chatd/bin/chatctl"
MOTD = "e2e motd one"
TEST_DROPINS = (f"{UNIT_DIR}/chatd.service.d/50-e2e-watchdog.conf",
                f"{UNIT_DIR}/chatd.service.d/60-admin-group.conf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, motd: str = MOTD, extra: dict[str, str] | None = None) -> str:
    """The shipped etc/chatd.toml with some ``key = value`` lines replaced: ``extra`` maps
    ``"section.key"`` to a TOML value; each key must be in the file once, in that section."""
    text = (REPO / "etc" / "chatd.toml").read_text()
    changes = {"server.port": str(port), "server.motd": json.dumps(motd), **(extra or {})}
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        m = re.search(rf"^\[{section}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        assert m, f"etc/chatd.toml has no [{section}]"
        body, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", m.group(1), flags=re.M)
        assert n == 1, f"etc/chatd.toml has {n} '{key} = ' lines in [{section}]"
        text = text[:m.start(1)] + body + text[m.end(1):]
    parsed = tomllib.loads(text)
    assert parsed["server"]["port"] == port
    return text


def open_files(limits: str) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE from the text of /proc/PID/limits."""
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert m, limits
    return int(m.group(1)), int(m.group(2))


@dataclass
class Box:
    ct: nspawn.Container
    port: int

    def config(self, **kwargs) -> None:
        self.ct.write(CONFIG, config_text(self.port, **kwargs))

    def start(self, unit: str = "chatd.service") -> float:
        t0 = time.monotonic()
        self.ct.systemctl("start", unit, timeout=60)
        return time.monotonic() - t0

    def active(self, unit: str = "chatd.service") -> str:
        return self.ct.systemctl("is-active", unit, check=False).stdout.strip()

    def main_pid(self) -> int:
        return int(self.ct.show("chatd.service", "MainPID"))

    def chatctl(self, *args: str, user: str | None = None, check: bool = True):
        return self.ct.run(CHATCTL, *args, user=user, check=check)

    def status(self) -> dict:
        return json.loads(self.chatctl("--json", "status").stdout)

    def connect(self, **kwargs) -> ChatClient:
        return ChatClient().connect(self.port, **kwargs)

    def journal(self, since: float, *units: str) -> str:
        unit_args = [arg for unit in units or UNITS for arg in ("-u", unit)]
        return self.ct.run("journalctl", "--no-pager", "-o", "short-monotonic", *unit_args,
                           "--since", f"@{since:.0f}", check=False).stdout

    def wait(self, what: str, predicate, timeout: float = 15.0, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    try:
        nspawn.check_host()
        e2e_build.ensure_tools()
        root = e2e_build.rootfs()
        work = tmp_path_factory.mktemp("nspawn")
        e2e_build.build_wheelhouse(REPO, work / "wheels")
    except e2e_build.Unavailable as exc:
        pytest.skip(f"no real systemd for the end-to-end test: {exc}")
    binds = {work / "wheels": "/mnt/wheels", REPO / "systemd": "/mnt/src/systemd",
             REPO / "etc": "/mnt/src/etc"}
    ct = nspawn.Container(root, binds, work)
    ct.start()
    try:
        box = Box(ct, free_port())
        install(box)
        yield box
    finally:
        ct.stop()
    assert ct.leftovers() == []


def install(box: Box) -> None:
    """systemd/README.md's install steps (the wheel comes from the bind-mounted wheelhouse)."""
    ct = box.ct
    ct.sh("python3 -m venv /opt/chatd\n"
          "/opt/chatd/bin/pip install --quiet --disable-pip-version-check --no-index "
          "--find-links /mnt/wheels chatd\n"
          "install -d -m 0755 /etc/chatd\n"
          "install -m 0644 /mnt/src/systemd/chatd.service /mnt/src/systemd/chatd.socket "
          f"{UNIT_DIR}/\n"
          "install -m 0644 /mnt/src/etc/logrotate.d/chatd /etc/logrotate.d/chatd\n", timeout=120)
    box.config()
    # The test port instead of 5555, which the host may be using (shared network).
    ct.write(f"{UNIT_DIR}/chatd.socket.d/50-e2e-port.conf",
             f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{box.port}\n")
    ct.systemctl("daemon-reload")
    # As the README says; it also keeps chatd.service loaded while stopped, so that its exit
    # status can be read (an unreferenced inactive unit is unloaded at once).
    ct.systemctl("enable", "chatd.service")
    for unit in UNITS:
        assert ct.read(f"{UNIT_DIR}/{unit}") == (REPO / "systemd" / unit).read_text(), unit


@pytest.fixture
def fresh(box: Box):
    """chatd.service and chatd.socket stopped, the default test config, no test drop-ins."""
    ct = box.ct
    ct.systemctl("stop", *UNITS, check=False)
    ct.systemctl("reset-failed", *UNITS, check=False)
    box.config()
    # no room history from earlier tests: a test's clients would get it replayed (SPEC §10)
    ct.run("rm", "-f", *(f"{STATE_DIR}/history.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")))
    if ct.run("ls", *TEST_DROPINS, check=False).stdout.strip():
        ct.remove(*TEST_DROPINS)
        ct.systemctl("daemon-reload")
    since = time.time() - 1
    yield box
    ct.systemctl("stop", *UNITS, check=False)
    journal = box.journal(since)
    print(f"--- journal of {' '.join(UNITS)} ---\n{journal}")
    assert TRACEBACK not in journal


# --------------------------------------------------------------------------------------------


def test_installed_units_verify_clean(fresh: Box):
    """systemd-analyze verify against the real install prints nothing; the loaded unit (with
    drop-ins) still scores as well as the file does offline."""
    paths = [f"{UNIT_DIR}/{unit}" for unit in UNITS]
    proc = fresh.ct.run("systemd-analyze", "verify", "--man=no", *paths, check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    proc = fresh.ct.run("systemd-analyze", "security", "--no-pager", "chatd.service")
    exposure = float(re.search(r"Overall exposure level for chatd\.service: (\d+\.\d)",
                               proc.stdout).group(1))
    assert exposure <= 2.5, proc.stdout


def test_start_returns_once_serving(fresh: Box):
    """Type=notify: `systemctl start` returns after READY=1, and chatd is serving by then (the
    client connects at once, no retry), as a DynamicUser, with STATUS= shown and updated."""
    elapsed = fresh.start()
    client = fresh.connect(motd=[MOTD])
    assert fresh.active() == "active"
    status = fresh.ct.show("chatd.service", "StatusText")
    assert status.startswith(f"listening on 127.0.0.1:{fresh.port}"), status
    # STATUS= follows the client count (chatd updates it every couple of seconds).
    fresh.wait("STATUS= to count the client",
               lambda: re.search(r"\b1 clients?\b", fresh.ct.show("chatd.service", "StatusText")))
    pid = fresh.main_pid()
    uid = int(re.search(r"^Uid:\s+(\d+)", fresh.ct.read(f"/proc/{pid}/status"), re.M).group(1))
    assert uid != 0
    assert fresh.ct.run("id", "-un", str(uid)).stdout.strip() == "chatd"
    # LimitNOFILE=65536, or as much of it as the container's PID 1 may give: systemd clamps
    # silently, and these VMs cap every process at 20000 (no CAP_SYS_RESOURCE, even as root).
    want = min(65536, open_files(fresh.ct.read("/proc/1/limits"))[1])
    assert open_files(fresh.ct.read(f"/proc/{pid}/limits")) == (want, want)
    client.close()
    print(f"systemctl start took {elapsed:.2f}s")


def test_clients_talk(fresh: Box):
    fresh.start()
    alice = fresh.connect()
    alice.set_nick("alice")
    bob = fresh.connect()
    alice.send_line("hello from the host")
    bob.wait_for("<alice> hello from the host")
    alice.close()
    bob.close()


def test_chatctl_status_through_runtime_directory(fresh: Box):
    """As root, chatctl finds /run/chatd/admin.sock on its own; the socket is 0600, chatd's."""
    fresh.start()
    client = fresh.connect()
    status = fresh.status()
    assert status["pid"] == fresh.main_pid()
    assert status["port"] == fresh.port
    assert status["clients"] == 1
    assert status["admin_socket"] == "/run/chatd/admin.sock"
    mode_owner = fresh.ct.run("stat", "-c", "%a %U", "/run/chatd/admin.sock").stdout.split()
    assert mode_owner == ["600", "chatd"]
    client.close()


def test_reload_keeps_pid_and_clients_and_applies_motd(fresh: Box):
    fresh.start()
    pid = fresh.main_pid()
    old = fresh.connect(motd=[MOTD])
    fresh.config(motd="e2e motd two")
    fresh.ct.systemctl("reload", "chatd.service")
    assert fresh.main_pid() == pid
    assert fresh.active() == "active"
    old.expect_silence()  # still connected, still served
    new = fresh.connect(motd=["e2e motd two"])
    # An invalid file: ExecReload (chatctl) fails, so does `systemctl reload`; chatd keeps
    # serving with the old settings.
    fresh.ct.write(CONFIG, "[limits]\nrate = 'x'\n")
    proc = fresh.ct.systemctl("reload", "chatd.service", check=False)
    assert proc.returncode != 0
    assert fresh.active() == "active" and fresh.main_pid() == pid
    fresh.connect(motd=["e2e motd two"]).close()
    old.close()
    new.close()


def test_watchdog_keeps_it_alive_and_kills_a_frozen_one(fresh: Box):
    """With WatchdogSec=2s, chatd's pings keep it running well past 2 s; a frozen chatd
    (SIGSTOP) is killed by the watchdog and restarted (Restart=on-failure)."""
    ct = fresh.ct
    ct.write(TEST_DROPINS[0], "[Service]\nWatchdogSec=2s\n")
    ct.systemctl("daemon-reload")
    fresh.start()
    assert ct.show("chatd.service", "WatchdogUSec") == "2s"
    pid = fresh.main_pid()
    pings = set()
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        assert fresh.active() == "active"
        assert ct.show("chatd.service", "NRestarts") == "0"
        assert fresh.main_pid() == pid
        pings.add(ct.show("chatd.service", "WatchdogTimestampMonotonic"))
        time.sleep(0.2)
    assert len(pings) >= 3, f"watchdog timestamps seen: {sorted(pings)}"

    ct.run("kill", "-STOP", str(pid))
    fresh.wait("the watchdog to restart chatd",
               lambda: ct.show("chatd.service", "NRestarts") == "1" and fresh.active() == "active",
               timeout=20)
    assert fresh.main_pid() != pid
    assert "Watchdog timeout" in fresh.journal(time.time() - 30, "chatd.service")
    fresh.connect().close()


def test_bans_survive_restart(fresh: Box):
    """A ban is saved in the StateDirectory (/var/lib/private/chatd under DynamicUser) and is
    still enforced after `systemctl restart`, by a new process."""
    fresh.start()
    fresh.chatctl("ban", "127.0.0.2", "-r", "e2e")
    refused = ChatClient().connect(fresh.port, source="127.0.0.2", greet=False)
    assert refused.expect_closed() == ["*** error: banned (e2e)"]
    pid = fresh.main_pid()
    fresh.ct.systemctl("restart", "chatd.service")
    assert fresh.main_pid() != pid
    bans = json.loads(fresh.chatctl("--json", "bans").stdout)
    assert [b["address"] for b in bans] == ["127.0.0.2/32"]
    refused = ChatClient().connect(fresh.port, source="127.0.0.2", greet=False)
    assert refused.expect_closed() == ["*** error: banned (e2e)"]
    fresh.connect().close()
    assert "127.0.0.2" in fresh.ct.read("/var/lib/private/chatd/bans.json")
    fresh.chatctl("unban", "127.0.0.2")


def test_stop_is_clean(fresh: Box):
    """`systemctl stop`: clients get the shutdown notice, chatd exits 0, the RuntimeDirectory
    (and the admin socket in it) is gone."""
    fresh.start()
    client = fresh.connect()
    fresh.ct.systemctl("stop", "chatd.service")
    assert "*** server shutting down" in client.expect_closed()
    ct = fresh.ct
    assert ct.show("chatd.service", "Result") == "success"
    assert ct.show("chatd.service", "ExecMainCode") == "1"  # CLD_EXITED, not killed
    assert ct.show("chatd.service", "ExecMainStatus") == "0"
    assert ct.run("test", "-e", "/run/chatd", check=False).returncode == 1


def test_socket_activation(fresh: Box):
    """chatd.socket listens; the first connection starts chatd.service, which serves the
    passed socket (so the client that triggered it gets the greeting)."""
    fresh.start("chatd.socket")
    assert fresh.active("chatd.service") == "inactive"
    client = fresh.connect(motd=[MOTD], timeout=30)
    # chatd greets the connection that woke it a moment before it sends READY=1
    fresh.wait("chatd.service active", lambda: fresh.active("chatd.service") == "active")
    assert fresh.status()["port"] == fresh.port
    # The listening socket belongs to systemd and outlives the service: after a restart (and
    # a stop) of chatd.service it still accepts, and chatd serves it again.
    pid = fresh.main_pid()
    fresh.ct.systemctl("restart", "chatd.service")
    assert fresh.main_pid() != pid
    client.expect_silence(0.5)  # kept through the fd store (SPEC §9), as without the socket
    client.sync()
    try:
        fresh.connect(motd=[MOTD]).close()
    except ConnectionRefusedError:
        pytest.fail("chatd.socket refuses connections after chatd.service restarted: the "
                    "stopping chatd shut down the listening socket it was passed (shutdown() "
                    "acts on systemd's socket too; only close() is private)")
    fresh.ct.systemctl("stop", "chatd.service")
    assert "*** server shutting down" in client.expect_closed()
    assert fresh.active("chatd.socket") == "active"
    fresh.connect(motd=[MOTD], timeout=30).close()
    fresh.wait("chatd.service active", lambda: fresh.active("chatd.service") == "active")


def chatting_pair(box: Box, room: str = "e2e") -> tuple[ChatClient, ChatClient]:
    """alice and bob, named, in ``room``."""
    alice = box.connect()
    alice.set_nick("alice")
    alice.join(room)
    bob = box.connect()
    bob.set_nick("bob")
    bob.join(room)
    alice.wait_for("*** bob joined e2e")
    return alice, bob


def who(client: ChatClient, room: str = "e2e") -> str:
    client.send_line("/who")
    return client.wait_for(lambda line: line.startswith(f"*** in {room}: "))


def test_restart_keeps_every_client(fresh: Box):
    """`systemctl restart` with clients chatting: a new process, every client still there
    under its nick in its room, every line delivered exactly once and in order, a half line
    sent across the restart arrives whole (SPEC §9, the fd store)."""
    fresh.config(extra={"limits.rate": "1000.0", "limits.burst": "1000"})  # 100 lines/s
    fresh.start()
    pid = fresh.main_pid()
    alice, bob = chatting_pair(fresh)
    who_before = who(bob)
    sender = send_paced(alice, "alice", 200, pad="")
    bob.wait_for("<alice> alice 20")
    alice.send_raw(b"")  # nothing: the half line below is bob's
    bob.send_raw(b"half a ")
    since = time.time() - 1
    fresh.ct.systemctl("restart", "chatd.service")
    new_pid = fresh.main_pid()
    assert new_pid != pid
    bob.send_raw(b"line, whole\r\n")
    sender.join(10)
    alice.wait_for("<bob> half a line, whole")
    bob.wait_for("<alice> alice 199", timeout=10)
    assert lines_of(bob, "alice") == list(range(200))
    assert who(bob) == who_before
    assert fresh.status()["clients"] == 2
    journal = fresh.journal(since, "chatd.service")
    assert '"event": "handed_to_fdstore"' in journal, journal
    resumed = [event for event in _events(journal, "resumed") if event["old_pid"] == pid]
    assert [(r["clients"], r["final"], r["via"]) for r in resumed] == [(2, True, "fdstore")]
    assert fresh.ct.show("chatd.service", "NRestarts") == "0"  # a restart job, not a crash
    newcomer = fresh.connect()
    newcomer.close()
    alice.close()
    bob.close()


def test_restart_and_kill_9_keep_an_irc_client(fresh: Box):
    """An IRC client (server-time asked for) in a room with a line client: `systemctl restart`
    hands it over through the fd store with its nick, channel and capabilities; after a
    `kill -9` the new process takes it from the last state saved, still in its channel, with
    the IRC listener carried too (SPEC §9, §14)."""
    irc_port = free_port()
    fresh.config(extra={"irc.irc_port": str(irc_port), "logging.log_level": '"debug"'})
    since = time.time() - 1
    fresh.start()
    pid = fresh.main_pid()
    carol = IrcClient().register(irc_port, "carol", caps=("server-time",))
    carol.send_line("JOIN #e2e")
    carol.numeric("366")
    alice, bob = chatting_pair(fresh)
    fresh.ct.systemctl("restart", "chatd.service")
    assert fresh.main_pid() != pid
    alice.send_line("after the restart")
    line = carol.wait_for(lambda text: text.endswith("PRIVMSG #e2e :after the restart"))
    assert line.startswith("@time="), line  # its capabilities came along
    carol.send_line("PRIVMSG #e2e :still on irc")
    bob.wait_for("<carol> still on irc")
    fresh.wait("a state with carol in it", lambda: any(
        event.get("clients") == 3
        for event in _events(fresh.journal(since, "chatd.service"), "fdstore_saved")))
    fresh.wait("both listeners, 3 clients and a state in the fd store",
               lambda: _stored(fresh) == 6)
    pid = fresh.main_pid()
    fresh.ct.run("kill", "-9", str(pid))
    fresh.wait("chatd restarted after the crash",
               lambda: fresh.ct.show("chatd.service", "NRestarts") == "1"
               and fresh.active() == "active", timeout=30)
    alice.send_line("after the crash")
    carol.wait_for(lambda text: text.endswith(":alice!alice@chatd PRIVMSG #e2e :after the crash"))
    carol.send_line("PRIVMSG #e2e :and on")
    bob.wait_for("<carol> and on")
    newcomer = IrcClient().register(irc_port, "dave")  # the IRC listener came along
    newcomer.close()
    for client in (alice, bob, carol):
        client.close()


def test_kill_9_is_survived_with_nick_and_room(fresh: Box):
    """kill -9 of the main process: Restart=on-failure starts a new one, which takes the
    connections and the last state from the fd store: alice and bob are still connected,
    named, in their room, and talk on."""
    fresh.config(extra={"logging.log_level": '"debug"'})  # for fdstore_saved
    since = time.time() - 1
    fresh.start()
    pid = fresh.main_pid()
    alice, bob = chatting_pair(fresh)
    who_before = who(bob)
    # the state is rewritten within a housekeeping tick (0.5 s) of a change
    fresh.wait("a state with both in e2e", lambda: any(
        event.get("clients") == 2 and event.get("rooms") == ["e2e"]
        for event in _events(fresh.journal(since, "chatd.service"), "fdstore_saved")))
    fresh.wait("the listener, 2 clients and a state in the fd store", lambda: _stored(fresh) == 4)
    fresh.ct.run("kill", "-9", str(pid))
    fresh.wait("chatd restarted after the crash",
               lambda: fresh.ct.show("chatd.service", "NRestarts") == "1"
               and fresh.active() == "active", timeout=30)
    assert fresh.main_pid() != pid
    alice.send_line("still here")
    bob.wait_for("<alice> still here")
    assert who(bob) == who_before
    bob.send_line("/nick bobby")
    alice.wait_for("*** bob is now known as bobby")
    assert fresh.status()["clients"] == 2
    fresh.connect().close()
    alice.close()
    bob.close()


def test_chatctl_upgrade_restarts_through_the_store(fresh: Box):
    """`chatctl upgrade` under systemd: the installed chatd checks the config, then systemd
    restarts the unit and the clients are kept; with an invalid config file the old chatd
    serves on and chatctl exits 1 with the reason."""
    fresh.start()
    pid = fresh.main_pid()
    alice, bob = chatting_pair(fresh)
    who_before = who(bob)
    out = fresh.chatctl("upgrade").stdout
    new_pid = fresh.main_pid()
    assert new_pid != pid
    assert out == f"upgraded: pid {pid} -> {new_pid}, version 0.1.0 -> 0.1.0, 2 clients kept\n"
    alice.send_line("after the upgrade")
    bob.wait_for("<alice> after the upgrade")
    assert who(bob) == who_before

    fresh.ct.write(CONFIG, "[limits]\nrate = 'x'\n")
    proc = fresh.chatctl("upgrade", check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("chatctl: error: ") and "rate" in proc.stderr, proc.stderr
    assert fresh.main_pid() == new_pid and fresh.active() == "active"
    bob.send_line("still the same chatd")
    alice.wait_for("<bob> still the same chatd")
    fresh.config()
    alice.close()
    bob.close()


def _events(journal: str, name: str) -> list[dict]:
    """chatd's JSON log events called ``name`` in journal text."""
    found = []
    for line in journal.splitlines():
        if f'"event": "{name}"' in line:
            found.append(json.loads(line[line.index("{"):]))
    return found


def _stored(box: Box) -> int:
    """How many descriptors systemd holds in chatd.service's fd store."""
    return int(box.ct.show("chatd.service", "NFileDescriptorStore") or 0)


def test_log_file_and_logrotate(fresh: Box):
    """With log_file in /var/log/chatd (LogsDirectory), etc/logrotate.d/chatd rotates it:
    the old file is renamed, chatd writes a new one (0640) after postrotate's reload."""
    ct = fresh.ct
    fresh.config(extra={"logging.log_file": json.dumps("/var/log/chatd/chatd.log")})
    fresh.start()
    fresh.connect().close()
    assert '"listening"' in ct.read("/var/log/chatd/chatd.log")
    proc = ct.run("logrotate", "--verbose", "--force", "/etc/logrotate.d/chatd", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr
    assert '"listening"' in ct.read("/var/log/chatd/chatd.log.1")
    fresh.connect().close()
    new = ct.read("/var/log/chatd/chatd.log")
    assert '"listening"' not in new and new.strip(), new
    assert ct.run("stat", "-c", "%a", "/var/log/chatd/chatd.log").stdout.strip() == "640"


def test_admin_group_dropin_from_readme(fresh: Box):
    """systemd/README.md's admin_group recipe: a member of chatadm may use chatctl, another
    user may not."""
    ct = fresh.ct
    ct.sh("getent group chatadm >/dev/null || groupadd --system chatadm\n"
          "id alice >/dev/null 2>&1 || useradd --no-create-home --groups chatadm alice\n"
          "id bob >/dev/null 2>&1 || useradd --no-create-home bob\n")
    fresh.config(extra={"admin.admin_group": '"chatadm"'})
    ct.write(TEST_DROPINS[1], readme_dropin())
    ct.systemctl("daemon-reload")
    fresh.start()
    assert ct.run("stat", "-c", "%a %G", "/run/chatd/admin.sock").stdout.split() == ["660", "chatadm"]
    # as the README says: no --socket; chatctl finds /run/chatd/admin.sock by itself
    ok = fresh.chatctl("--json", "status", user="alice")
    assert json.loads(ok.stdout)["pid"] == fresh.main_pid()
    denied = fresh.chatctl("--socket", "/run/chatd/admin.sock", "status", user="bob", check=False)
    assert denied.returncode == 3, denied.stderr


def readme_dropin() -> str:
    """The drop-in shown in systemd/README.md (the block after 'admin_group drop-in:')."""
    readme = (REPO / "systemd" / "README.md").read_text()
    m = re.search(r"<!-- admin-group-dropin -->\n```ini\n(.*?)```", readme, re.S)
    assert m, "systemd/README.md lost its admin_group drop-in block"
    return m.group(1)
