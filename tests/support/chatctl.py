"""chatctl for the tests: as a real process (``run_chatctl``, ``ctl``: a check of its exit
status and stderr) or in process through click's CliRunner (``invoke``), and the lines it
prints when it cannot reach chatd; for test_chatctl*.py and the other live tests that drive
chatd through chatctl."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from chatctl.cli import main as chatctl_main
from support.paths import REPO, TRACEBACK

UNREACHABLE = "chatctl: cannot reach chatd at {path}: {why}\n"
NO_SOCKET = "no socket (is chatd running?)"
REFUSED = "connection refused (stale socket: is chatd running?)"
PERMISSION = "permission denied (run as root or as the chatd user, or join the admin group)"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("CHATD_ADMIN_SOCKET", None)  # only --socket decides, in these tests
    return env


def run_chatctl(socket_path: str, *args: str, user: str | None = None,
                timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess:
    """``chatctl --socket PATH ARGS…`` as a real process (as ``user``, via setpriv), with
    ``input`` on its stdin (else /dev/null)."""
    argv = [sys.executable, "-m", "chatctl", "--socket", socket_path, *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    stdin = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
    proc = subprocess.run(argv, **stdin, capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=timeout)
    assert TRACEBACK not in proc.stderr, proc.stderr
    return proc


def ctl(server, *args: str, status: int = 0, **kwargs) -> str:
    """Run chatctl against ``server``; check the exit status and that stderr is empty on
    success; return stdout (or stderr, for a failure)."""
    proc = run_chatctl(server.admin_socket, *args, **kwargs)
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    if status == 0:
        assert proc.stderr == "", proc.stderr
        return proc.stdout
    assert proc.stdout == "", proc.stdout
    return proc.stderr


def invoke(server_or_path, *args: str, status: int = 0):
    """chatctl in-process (CliRunner); checks the exit status; returns the click Result."""
    path = getattr(server_or_path, "admin_socket", server_or_path)
    result = CliRunner().invoke(chatctl_main, ["--socket", str(path), *args],
                                prog_name="chatctl")
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr,
                                        result.exception)
    return result
