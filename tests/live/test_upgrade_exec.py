"""An upgrade keeps the process: its pid, its name, its terminal (issue 23 §4, chatd/lifecycle/reexec.py).

A chatd started from a shell on a terminal (``make run``) is upgraded with ``chatctl upgrade``:
the shell must go on waiting for it (no prompt while chatd writes into the terminal), Ctrl-C
must still stop it, and ``pgrep -x chatd`` must still find it. The same for ``--daemon``:
the pidfile names the live process, still called chatd. Real processes on a real pty.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.chatctl import ctl
from support.client import ChatClient
from support.daemon import chatd_executable
from support.paths import REPO
from support.waiting import wait_gone
from test_upgrade import UPGRADED, comm, rename


class Terminal:
    """The master side of a pty: a thread keeps reading what the programs on it write (so
    they never block on a full terminal), and JSON lines are chatd's log events."""

    def __init__(self, master: int) -> None:
        self.master = master
        self._text = ""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: nothing has the terminal open any more
                data = b""
            with self._cond:
                self._text += data.decode("utf-8", "replace")
                self._cond.notify_all()
            if not data:
                return

    def text(self) -> str:
        with self._cond:
            return self._text

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.text().replace("\r", "").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def wait_for(self, what, timeout: float = 10.0):
        """Until ``what()`` is true (it sees the text so far); returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := what()):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"not seen on the terminal within {timeout}s; it shows:\n"
                                + self._text[-4000:])
                self._cond.wait(left)
            return value


def upgrade_in_place(admin_socket: str, pid: int) -> re.Match:
    out = ctl(SimpleNamespace(admin_socket=admin_socket), "upgrade", timeout=60).strip()
    m = UPGRADED.fullmatch(out)
    assert m and int(m[1]) == int(m[2]) == pid, (out, pid)
    return m


def blocked_or_ignored(pid: int, signum: int) -> bool:
    """Is ``signum`` blocked or ignored by ``pid``'s main thread? (Both survive an exec.)"""
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return any(int(status[key], 16) >> (signum - 1) & 1 for key in ("SigBlk", "SigIgn"))


def process_group(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])


def test_a_foreground_chatd_keeps_its_terminal_its_pid_and_its_name(tmp_path):
    """``sh -c 'chatd …; echo EXITED $?'`` on a pty, as the terminal's foreground process
    group: after the upgrade the shell still waits, chatd has the same pid, is named chatd,
    is still the foreground, and its clients chat on; then Ctrl-C stops it, gracefully."""
    rundir = Path(tempfile.mkdtemp(prefix="chatd-pty-"))  # short: a Unix socket path
    admin = str(rundir / "admin.sock")
    config = tmp_path / "chatd.toml"
    config.write_text("[history]\nhistory_on_join = 0\n")
    command = (f"{chatd_executable()} -c {config} --port 0 --log-format json "
               f"--state-dir {rundir / 'state'}; echo EXITED $?")
    master, slave = pty.openpty()
    # bash, as make does, waits for a child that handles SIGINT and exits 0, then goes on
    shell = subprocess.Popen(["setsid", "-w", "-c", "bash", "-c", command], stdin=slave,
                             stdout=slave, stderr=slave,
                             env={**os.environ, "PYTHONPATH": str(REPO),
                                  "CHATD_ADMIN_SOCKET": admin})
    os.close(slave)
    terminal = Terminal(master)
    pid = None
    try:
        listening = terminal.wait_for(lambda: terminal.events("listening"))[0]
        pid, port = listening["pid"], listening["port"]
        assert comm(pid) == "chatd"
        foreground = os.tcgetpgrp(master)
        assert process_group(pid) == foreground
        alice, bob = ChatClient().connect(port), ChatClient().connect(port)
        alice.expect(f"*** {bob.nick} joined lobby")
        rename(alice, "alice")
        bob.wait_for("*** guest-1 is now known as alice")
        alice.send_line("before")
        alice.send_raw(b"half a li")

        upgrade_in_place(admin, pid)
        alice.send_raw(b"ne, whole\r\n")
        alice.send_line("after")
        terminal.wait_for(lambda: len(terminal.events("listening")) == 2)
        assert comm(pid) == "chatd"
        for finder in (["pgrep", "-x", "chatd"], ["pidof", "-x", "chatd"]):
            assert str(pid) in subprocess.run(finder, capture_output=True, text=True,
                                              check=False).stdout.split(), finder
        assert process_group(pid) == foreground == os.tcgetpgrp(master)
        assert not blocked_or_ignored(pid, signal.SIGINT)
        assert shell.poll() is None and "EXITED" not in terminal.text()  # still waiting
        for line in ("<alice> before", "<alice> half a line, whole", "<alice> after"):
            bob.expect(line)
        bob.send_line("/who")
        bob.expect(f"*** in lobby: alice, {bob.nick}")

        os.write(master, b"\x03")  # Ctrl-C
        assert "*** server shutting down" in bob.expect_closed()
        assert shell.wait(10) == 0
        terminal.wait_for(lambda: "EXITED 0" in terminal.text())
        assert terminal.events("shutdown")
        alice.close()
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(5)
        if pid is not None and not wait_gone(pid, 0):
            os.kill(pid, signal.SIGKILL)
        os.close(master)
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.mark.usefixtures("subreaper")
def test_a_daemon_keeps_its_pid_its_pidfile_and_its_name(tmp_path):
    """``chatd --daemon --pidfile``, upgraded twice: the pidfile names the live process all
    along, which is named chatd; it still stops on SIGTERM and removes its pidfile."""
    rundir = Path(tempfile.mkdtemp(prefix="chatd-d-"))
    pidfile, log, admin = rundir / "chatd.pid", rundir / "chatd.log", str(rundir / "admin.sock")
    launched = subprocess.run(
        [chatd_executable(), "--daemon", "--port", "0", "--pidfile", str(pidfile),
         "--log-file", str(log), "--admin-socket", admin, "--state-dir", str(rundir / "state")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert launched.returncode == 0, launched.stderr
    pid = int(pidfile.read_text())
    try:
        events = [json.loads(line) for line in log.read_text().splitlines()]
        port = next(e["port"] for e in events if e["event"] == "listening")
        alice = ChatClient().connect(port)
        for _ in range(2):
            upgrade_in_place(admin, pid)
            assert int(pidfile.read_text()) == pid and comm(pid) == "chatd"
            alice.send_line("/who")
            alice.expect(f"*** in lobby: {alice.nick}")
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # a daemon pins no directory
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not pidfile.exists()
        alice.close()
    finally:
        if not wait_gone(pid, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.mark.parametrize("data", [
    b'{"version": 1}',  # JSON, as the spawn handover writes: not this path's format
    b"chatd-upgrade-state marshal 4\n\x00garbage",
    b"chatd-upgrade-state marshal 4\n" + __import__("marshal").dumps([1, 2], 4),  # not a dict
    b"",
])
def test_an_exec_state_that_is_not_one_is_refused_in_one_line(data):
    """What the new image reads from the memfd is checked before use: a HandoverError (one
    line, which chatctl is told), never a traceback from marshal."""
    from chatd.lifecycle.handover import HandoverError
    from chatd.lifecycle.reexec import ExecTakeover

    fd = os.memfd_create("test-state", 0)
    os.write(fd, data)
    with pytest.raises(HandoverError, match="unreadable|not one this chatd reads"):
        ExecTakeover(fd).receive()


def test_the_exec_state_round_trips_through_its_format():
    """The state as the old image writes it (reexec._exec's encoding) reads back whole."""
    import marshal

    from chatd.lifecycle.reexec import STATE_MAGIC, ExecTakeover

    state = {"version": 1, "clients": [{"id": 7, "nick": "ana", "backlog": "", "idle": 1.5}],
             "exec": {"fds": [], "frozen": 1.0, "asker": None}}
    fd = os.memfd_create("test-state", 0)
    os.write(fd, STATE_MAGIC + marshal.dumps(state, 4))
    assert ExecTakeover(fd).receive() == state
