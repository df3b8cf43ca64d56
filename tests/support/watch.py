"""``chatctl watch`` as a real process (:class:`Watch`) and the ``watching`` fixture that starts
watches and kills whatever is left of them at teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from support.paths import REPO, TRACEBACK
from support.waiting import wait_until


def _interruptible() -> None:
    """Ctrl-C as a terminal gives it: a suite started in the background by a non-interactive
    shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Watch:
    """``chatctl --socket PATH watch ARGS…`` as a subprocess; a thread collects its stdout."""

    def __init__(self, socket_path: str, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("CHATD_ADMIN_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatctl", "--socket", socket_path, "watch", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO, env=env, preexec_fn=_interruptible)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_line(self, *parts: str, timeout: float = 10.0) -> str:
        """The first line containing every one of ``parts``."""
        def found():
            return next((ln for ln in self.lines if all(p in ln for p in parts)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._done, timeout)
            line = found()
        assert line is not None, (parts, self.lines, self.proc.poll())
        return line

    def events(self) -> list[dict]:
        with self._cond:
            return [json.loads(line) for line in self.lines]

    def wait_event(self, name: str, timeout: float = 10.0, **fields) -> dict:
        def found():
            return next((e for e in map(json.loads, self.lines) if e.get("event") == name
                         and all(e.get(k) == v for k, v in fields.items())), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._done, timeout)
            event = found()
        assert event is not None, (name, fields, self.lines, self.proc.poll())
        return event

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the exit; (status, stderr)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"chatctl watch did not exit; stdout: {self.lines}")
        stderr = self.proc.stderr.read()
        with self._cond:
            self._cond.wait_for(lambda: self._done, 5)
        assert TRACEBACK not in stderr, stderr
        return status, stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def watching():
    started: list[Watch] = []

    def start(srv, *args: str, subscribed: bool = True) -> Watch:
        """A running watch; with ``subscribed``, once chatd has answered its ``watch``."""
        before = len(_subscriptions(srv))
        w = Watch(srv.admin_socket, *args)
        started.append(w)
        if subscribed:
            wait_until(lambda: len(_subscriptions(srv)) > before, what="the watch subscription")
        return w

    yield start
    for w in started:
        w.kill()


def _subscriptions(srv) -> list[dict]:
    return srv.find_events("admin_command", command="watch", outcome="ok")
