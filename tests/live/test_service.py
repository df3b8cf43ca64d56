"""chatd as a Unix service: --daemon and its pidfile, log files and SIGHUP, sd_notify with a fake
NOTIFY_SOCKET, the watchdog, and socket activation (a listener handed over as fd 3).

The --daemon tests make this pytest process a child subreaper (prctl), so the detached daemon is
re-parented to us and ``os.waitpid`` gives its real exit status; nothing polls with ``kill -0``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.admin import Admin
from support.paths import REPO
from support.sockets import read_until
from support.waiting import wait_until

from chatd.lifecycle.systemd import Notifier, passed_fds

# -- --daemon ----------------------------------------------------------------------------------


def chat_once(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return read_until(sock, b"you are ")


def test_daemon_detaches_serves_and_cleans_up_on_sigterm(daemon_paths):
    d = daemon_paths
    result = d.launch()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a log file was given, so no warning either
    pid = d.pid()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ppid, session = int(stat[1]), int(stat[3])
    assert ppid == os.getpid()  # detached: re-parented to us, the subreaper
    assert session != os.getsid(0) and session != pid  # new session, not its leader
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert b"*** welcome to chatd" in chat_once(d.port())  # ready when the launcher returned
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not d.pidfile.exists() and not d.admin.exists()
    assert d.events()[-1]["event"] == "shutdown"


def test_daemon_starts_with_stdin_closed(daemon_paths):
    result = daemon_paths.launch(stdin_closed=True)
    assert result.returncode == 0, result.stderr
    chat_once(daemon_paths.port())


def test_live_pidfile_refuses_a_second_instance(daemon_paths):
    d = daemon_paths
    assert d.launch().returncode == 0
    second = subprocess.run(
        [sys.executable, "-m", "chatd", "--daemon", "--port", "0", "--pidfile", str(d.pidfile),
         "--admin-socket", str(d.base / "other.sock"), "--state-dir", str(d.state),
         "--log-file", str(d.base / "other.log")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"chatd: error: chatd is already running (pid {d.pid()}, pidfile {d.pidfile})")
    assert not (d.base / "other.sock").exists()  # refused before touching the admin socket
    chat_once(d.port())


def test_stale_pidfile_and_socket_after_kill_9_are_replaced(daemon_paths):
    d = daemon_paths
    assert d.launch().returncode == 0
    old = d.pid()
    os.kill(old, signal.SIGKILL)
    os.waitpid(old, 0)
    assert d.pidfile.exists() and d.admin.exists()  # left behind, as a crash leaves them
    result = d.launch()
    assert result.returncode == 0, result.stderr
    assert d.pid() != old
    chat_once(d.port())


def test_bind_failure_reaches_the_terminal(daemon_paths):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    result = daemon_paths.launch(port=port)
    busy.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"chatd: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not daemon_paths.pidfile.exists() and not daemon_paths.admin.exists()


def test_log_file_is_reopened_on_sighup(daemon_paths):
    d = daemon_paths
    assert d.launch().returncode == 0
    port = d.port()
    rotated = d.base / "chatd.log.1"
    d.log.rename(rotated)
    os.kill(d.pid(), signal.SIGHUP)
    wait_until(lambda: d.log.exists() and "config_reloaded" in d.log.read_text(), what="new log")
    chat_once(port)
    wait_until(lambda: "client_connected" in d.log.read_text(), what="events in the new file")
    assert "client_connected" not in rotated.read_text()


def test_daemon_without_log_file_warns(daemon_paths):
    d = daemon_paths
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--daemon", "--port", "0", "--pidfile", str(d.pidfile),
         "--admin-socket", str(d.admin), "--state-dir", str(d.state)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0
    assert "without --log-file" in result.stderr


# -- files chatd creates: never world-readable, whatever the umask ------------------------------

#: A launcher prefix: run chatd with umask 000, so that only chatd's own modes can keep its files
#: private (with the usual 022 a file created 0644 would pass a "not writable by others" test).
UMASK_000 = ["sh", "-c", 'umask 000 && exec "$0" "$@"']


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def umask_of(pid: int) -> int:
    """The umask a running process has (Linux >= 4.7), to prove the test's premise."""
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Umask:"))
    return int(line.split()[1], 8)


def test_bans_file_and_state_dirs_are_private_whatever_the_umask(chatd, tmp_path):
    state = tmp_path / "new" / "state"  # neither exists yet: chatd makes both
    srv = chatd(launcher=UMASK_000, args=["--state-dir", str(state)])
    assert umask_of(srv.proc.pid) == 0
    admin = Admin(srv.admin_socket)
    admin.result("ban", address="192.0.2.7", reason="spam")
    admin.result("ban", address="198.51.100.0/24")  # a second save replaces the file
    admin.close()
    bans = state / "bans.json"
    assert [b["address"] for b in json.loads(bans.read_text())["bans"]] == ["192.0.2.7/32", "198.51.100.0/24"]
    assert mode(bans) == 0o600
    assert mode(state) == 0o700 and mode(state.parent) == 0o700
    assert sorted(os.listdir(state)) == ["bans.json"]  # no temporary file left behind


def start_logging_to(log_file: Path, base: Path) -> subprocess.Popen:
    """A foreground chatd under umask 000 logging to ``log_file``; returns once it listens."""
    proc = subprocess.Popen(
        [*UMASK_000, sys.executable, "-m", "chatd", "--port", "0", "--log-file", str(log_file),
         "--admin-socket", str(base / "admin.sock"), "--state-dir", str(base / "state")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})

    def listening():
        assert proc.poll() is None, proc.stderr.read().decode()
        return log_file.exists() and '"listening"' in log_file.read_text()

    try:
        wait_until(listening, what=f"listening in {log_file}")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc


def test_log_file_and_missing_log_directories_are_not_world_readable(tmp_path):
    log_file = tmp_path / "logs" / "chatd" / "chatd.log"
    proc = start_logging_to(log_file, tmp_path)
    try:
        assert umask_of(proc.pid) == 0
        assert mode(log_file) == 0o640
        assert mode(log_file.parent) == 0o750 and mode(log_file.parent.parent) == 0o750
        log_file.rename(tmp_path / "rotated.log")  # logrotate, then SIGHUP: a new file, same mode
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log_file.exists() and "config_reloaded" in log_file.read_text(),
                   what="the reopened log")
        assert mode(log_file) == 0o640
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(10)
        proc.stderr.close()
    assert status == 0


def test_daemon_log_file_is_not_world_readable(daemon_paths):
    d = daemon_paths
    d.log = d.base / "log" / "chatd.log"  # in a directory that does not exist yet
    result = d.launch(umask="000")
    assert result.returncode == 0, result.stderr
    assert mode(d.log) == 0o640 and mode(d.log.parent) == 0o750
    pid = d.pid()
    assert umask_of(pid) == 0o027  # the daemon's own (python-daemon); the file came before
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("daemonize", [False, True], ids=["foreground", "daemon"])
def test_log_directory_that_cannot_be_made_is_one_line_exit_1(tmp_path, daemonize):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log_file = blocker / "sub" / "chatd.log"
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--port", "0", "--log-file", str(log_file),
         "--admin-socket", str(tmp_path / "admin.sock"), "--state-dir", str(tmp_path / "state"),
         *(["--daemon"] if daemonize else [])],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"chatd: error: cannot create log directory {blocker} (for {log_file}): Not a directory"]
    assert not (tmp_path / "admin.sock").exists()


# -- foreground pidfile ------------------------------------------------------------------------


def test_foreground_pidfile_is_written_and_removed(chatd, tmp_path):
    pidfile = tmp_path / "fg.pid"
    srv = chatd(args=["--pidfile", str(pidfile)])
    assert int(pidfile.read_text()) == srv.proc.pid
    assert srv.terminate() == 0
    assert not pidfile.exists()


# -- sd_notify ---------------------------------------------------------------------------------


class FakeSystemd:
    """A NOTIFY_SOCKET receiver: collects datagrams with the sender's pid (SO_PASSCRED)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="chatd-n-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.messages: list[tuple[int, dict]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> dict:
        """The next message (after those already matched) carrying ``key`` (= ``value``)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (_, fields) in enumerate(self.messages):
                if key in fields and (value is None or fields[key] == value):
                    del self.messages[: i + 1]
                    return fields
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {key}={value} from chatd; got {self.messages}"
            self.sock.settimeout(remaining)
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = next((int.from_bytes(d[:4], "little") for lvl, typ, d in ancdata
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), 0)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, {**fields, "_pid": pid}))

    def discard_pending(self) -> None:
        """Forget every message so far, those still queued in the socket included."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass
        self.messages.clear()

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_systemd():
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_notify_ready_status_reload_and_stopping(chatd, fake_systemd):
    srv = chatd(env={"NOTIFY_SOCKET": fake_systemd.path}, server={"motd": "one"})
    ready = fake_systemd.wait_for("READY", "1")
    assert ready["_pid"] == srv.proc.pid
    assert ready["STATUS"] == f"listening on 127.0.0.1:{srv.port}, 0 clients, 1 rooms"
    srv.connect()  # READY came after the listener was bound and serving
    fake_systemd.wait_for("STATUS", f"listening on 127.0.0.1:{srv.port}, 1 clients, 1 rooms")
    srv.proc.send_signal(signal.SIGHUP)
    reloading = fake_systemd.wait_for("RELOADING", "1")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    fake_systemd.wait_for("READY", "1")
    srv.proc.send_signal(signal.SIGTERM)
    assert fake_systemd.wait_for("STOPPING", "1")["STATUS"] == "shutting down"
    assert srv.proc.wait(10) == 0


def test_watchdog_pings_and_stops_when_the_server_cannot_accept(chatd, fake_systemd):
    srv = chatd(env={"NOTIFY_SOCKET": fake_systemd.path, "WATCHDOG_USEC": "200000"})
    for _ in range(3):
        fake_systemd.wait_for("WATCHDOG", "1")
    # Wedge the listener: no descriptor left for accept() (nor for the watchdog's probe).
    # The count may include a probe's own descriptors, which free one again when it ends:
    # then the limit is set anew from a fresh count until the failure shows.
    soft, hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE)
    deadline = time.monotonic() + 30
    while not any(e["event"] == "watchdog_failed" for e in srv.events):
        assert time.monotonic() < deadline, "the watchdog never noticed the wedged listener"
        in_use = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (in_use, hard))
        with contextlib.suppress(pytest.fail.Exception):
            srv.wait_event("watchdog_failed", timeout=1.0)
    fake_systemd.discard_pending()  # pings sent before the wedge may still be queued
    with pytest.raises(AssertionError, match="no WATCHDOG"):
        fake_systemd.wait_for("WATCHDOG", "1", timeout=0.6)  # three intervals without a ping
    resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    fake_systemd.wait_for("WATCHDOG", "1")
    srv.connect()


def test_malformed_systemd_variables_are_ignored():
    """Values that are digits to str.isdigit() but not to int() ("²") mean no watchdog and no
    passed sockets, not a crash at start."""
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "\u00b2"}).watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "200000"}).watchdog_interval == 0.1
    assert passed_fds({"LISTEN_FDS": "\u00b2", "LISTEN_PID": str(os.getpid())}) == []


def test_no_watchdog_pings_unless_asked(chatd, fake_systemd):
    srv = chatd(env={"NOTIFY_SOCKET": fake_systemd.path})
    fake_systemd.wait_for("READY", "1")
    srv.connect()
    fake_systemd.wait_for("STATUS", f"listening on 127.0.0.1:{srv.port}, 1 clients, 1 rooms")
    assert not any("WATCHDOG" in fields for _, fields in fake_systemd.messages)


def test_abstract_notify_socket(chatd):
    name = f"chatd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        chatd(env={"NOTIFY_SOCKET": "@" + name})
        assert b"READY=1" in sock.recv(4096)
    finally:
        sock.close()


# -- socket activation -------------------------------------------------------------------------

TRAMPOLINE = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd);"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()));"
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def test_socket_activation_serves_the_passed_listener(chatd):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    srv = chatd(launcher=[sys.executable, "-c", TRAMPOLINE, str(fd)], pass_fds=(fd,))
    listener.close()  # only chatd holds it now
    assert srv.port == port  # `listening` reports the passed socket, not --port 0
    alice, bob = srv.connect_many(2)
    alice.send_line("activated")
    bob.expect(f"<{alice.nick}> activated")


def test_listen_fds_for_another_pid_are_ignored(chatd):
    srv = chatd(env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert srv.port != 0
    srv.connect()
