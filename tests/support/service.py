"""chatd as a Unix service: ``subreaper`` makes this pytest process a child subreaper (prctl),
so a detached ``--daemon`` is re-parented to us and ``os.waitpid`` gives its real exit status;
``daemon_paths`` gives one --daemon instance its paths and reads what it wrote."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.paths import REPO

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    while True:  # the double fork's intermediate child, and anything else re-parented to us
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


class Daemon:
    """Paths for one --daemon instance and helpers to read what it wrote."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pidfile = base / "chatd.pid"
        self.log = base / "chatd.log"
        self.admin = base / "admin.sock"
        self.state = base / "state"

    def launch(self, *extra: str, port: int = 0, stdin_closed: bool = False,
               umask: str | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "chatd", "--daemon", "--port", str(port),
                "--pidfile", str(self.pidfile), "--log-file", str(self.log),
                "--admin-socket", str(self.admin), "--state-dir", str(self.state), *extra]
        if stdin_closed:
            argv = ["bash", "-c", 'exec 0<&- "$@"', "chatd", *argv]
        if umask is not None:
            argv = ["sh", "-c", f'umask {umask} && exec "$0" "$@"', *argv]
        return subprocess.run(argv, stdin=None if stdin_closed else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=20,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def events(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def port(self) -> int:
        """The port of the latest start (the log file is appended to across restarts)."""
        return [e["port"] for e in self.events() if e["event"] == "listening"][-1]


@pytest.fixture
def daemon_paths(subreaper):
    base = Path(tempfile.mkdtemp(prefix="chatd-d-"))
    daemon = Daemon(base)
    yield daemon
    if daemon.pidfile.exists():
        try:
            os.kill(daemon.pid(), signal.SIGKILL)
            os.waitpid(daemon.pid(), 0)
        except (OSError, ValueError):
            pass
    shutil.rmtree(base, ignore_errors=True)
