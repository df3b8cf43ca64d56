"""docs/protocol.md §7 chatctl, the command line itself: when it cannot reach chatd (exit 3, one
line saying which case and which path: no socket, a stale one, permission denied by the file
modes or by the daemon, a systemd socket a non-root user cannot use), and usage errors (exit 2),
the help texts, ``--version`` and CHATD_ADMIN_SOCKET. The commands against a real chatd are in
test_chatctl.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.chatctl import (
    NO_SOCKET,
    PERMISSION,
    REFUSED,
    UNREACHABLE,
    _env,
    invoke,
    run_chatctl,
)
from support.paths import REPO

from chatctl.cli import main as chatctl_main
from chatd import __version__


@pytest.fixture
def sockdir():
    """A short directory for Unix sockets (their paths must fit in 108 bytes)."""
    path = tempfile.mkdtemp(prefix="chatctl-")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# cannot reach the daemon: exit 3, which case, which path
# --------------------------------------------------------------------------------------------


def test_no_socket(sockdir):
    path = str(sockdir / "admin.sock")
    proc = run_chatctl(path, "status")
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == UNREACHABLE.format(path=path, why=NO_SOCKET)
    missing_dir = str(sockdir / "nope" / "admin.sock")
    assert invoke(missing_dir, "list", status=3).stderr == \
        UNREACHABLE.format(path=missing_dir, why=NO_SOCKET)


def test_errors_under_json_are_json_on_stderr(sockdir):
    path = str(sockdir / "admin.sock")
    proc = run_chatctl(path, "--json", "status")
    assert (proc.returncode, proc.stdout) == (3, "")
    assert json.loads(proc.stderr) == {"error": {
        "code": "no_socket", "socket": path,
        "message": f"cannot reach chatd at {path}: {NO_SOCKET}"}}
    assert proc.stderr.count("\n") == 1
    after = invoke(path, "list", "--json", status=3)  # --json after the command, too
    assert json.loads(after.stderr)["error"]["code"] == "no_socket"


def test_stale_socket(sockdir):
    path = str(sockdir / "admin.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # the file stays, nobody listens: what a killed chatd leaves behind
    stale.close()
    proc = run_chatctl(path, "list")
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == UNREACHABLE.format(path=path, why=REFUSED)


def _can_run_as_nobody() -> str | None:
    """Why the permission tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to run chatctl as another user; root itself bypasses file modes)"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to run chatctl as nobody"
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            sys.executable, "-c", "import click"],
                           cwd=REPO, env=_env(), capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"nobody cannot run {sys.executable} with click: {probe.stderr[-200:]!r}"
    return None


needs_nobody = pytest.mark.skipif("_can_run_as_nobody() is not None",
                                  reason="cannot run chatctl as an unprivileged user here")


@needs_nobody
def test_permission_denied_by_file_mode(sockdir):
    os.chmod(sockdir, 0o755)  # the directory lets nobody through; the socket file does not
    path = str(sockdir / "admin.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        os.chmod(path, 0o600)
        proc = run_chatctl(path, "status", user="nobody")
    finally:
        listener.close()
    assert (proc.returncode, proc.stdout) == (3, ""), proc
    assert proc.stderr == UNREACHABLE.format(path=path, why=PERMISSION)


@needs_nobody
def test_permission_denied_by_the_daemon(server):
    """With the socket world-accessible, SO_PEERCRED still turns nobody away."""
    os.chmod(os.path.dirname(server.admin_socket), 0o755)
    os.chmod(server.admin_socket, 0o666)
    client = server.connect()
    proc = run_chatctl(server.admin_socket, "kick", client.nick, user="nobody")
    assert (proc.returncode, proc.stdout) == (3, ""), proc
    assert proc.stderr == UNREACHABLE.format(path=server.admin_socket, why=PERMISSION)
    client.expect_silence()  # and nothing happened


@needs_nobody
@pytest.mark.parametrize("dir_mode", [0o700, 0o755])
def test_non_root_is_told_about_a_systemd_socket_it_cannot_use(sockdir, dir_mode):
    """nobody has no socket of its own; the systemd chatd's is root's (its directory closed,
    or the socket 0600): chatctl says so, names both paths and hints --socket / the group."""
    run = sockdir / "run"
    run.mkdir(mode=dir_mode)
    os.chmod(sockdir, 0o755)
    os.chmod(run, dir_mode)
    system = str(run / "admin.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(system)
    listener.listen(1)
    os.chmod(system, 0o600)
    own = "/tmp/chatd-65534/admin.sock"
    if os.path.exists(own):
        pytest.skip(f"{own} exists on this machine")
    env = {k: v for k, v in _env().items() if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    env["CHATD_TEST_SYSTEMD_SOCKET"] = system
    try:
        proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               sys.executable, "-m", "chatctl", "status"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=30)
    finally:
        listener.close()
    assert (proc.returncode, proc.stdout) == (3, ""), proc
    assert proc.stderr == (
        f"chatctl: cannot reach chatd at {own}: no socket; {system} exists but is not accessible "
        f"to this user (use --socket {system} as root, or join chatd's admin group)\n")


# --------------------------------------------------------------------------------------------
# usage, help, and the command line's own rules
# --------------------------------------------------------------------------------------------


def test_usage_errors_exit_2(sockdir):
    path = str(sockdir / "admin.sock")  # never reached: usage is checked first
    for args in (["kick"], ["frobnicate"], ["broadcast"], ["ban"], ["list", "extra"],
                 ["ban", "192.0.2.1", "--duration", "-5"], ["--timeout", "0", "status"],
                 ["account", "add"], ["account", "frob"], ["account", "passwd", "a", "pw"]):
        result = invoke(path, *args, status=2)
        assert result.stdout == "" and "Usage:" in result.stderr, (args, result.stderr)
    proc = run_chatctl(path, "broadcast", "  ")
    assert proc.returncode == 2 and "empty" in proc.stderr, proc


def test_help_texts():
    top = CliRunner().invoke(chatctl_main, ["--help"], prog_name="chatctl")
    assert top.exit_code == 0
    for name in ("status", "list", "kick", "broadcast", "rooms", "ban", "unban", "bans", "mute",
                 "unmute", "reload", "shutdown", "--socket", "--json", "CHATD_ADMIN_SOCKET",
                 "Exit status", "chatctl kick alice"):
        assert name in top.stdout, name
    for cmd in ("status", "list", "kick", "broadcast", "rooms", "ban", "unban", "bans", "mute",
                "unmute", "reload", "shutdown"):
        result = CliRunner().invoke(chatctl_main, [cmd, "--help"], prog_name="chatctl")
        assert result.exit_code == 0 and f"Usage: chatctl {cmd}" in result.stdout, cmd
    assert "account" in top.stdout
    for sub in ("", "add", "passwd", "disable", "enable", "delete", "list", "show"):
        result = CliRunner().invoke(chatctl_main, ["account", *filter(None, [sub]), "--help"],
                                    prog_name="chatctl")
        assert result.exit_code == 0, sub
        assert f"Usage: chatctl account {sub}".rstrip() in result.stdout, sub
        assert "--json" in result.stdout, sub
    proc = subprocess.run([sys.executable, "-m", "chatctl", "--version"], capture_output=True,
                          text=True, cwd=REPO, env=_env(), timeout=30)
    assert (proc.returncode, proc.stdout) == (0, f"chatctl {__version__}\n")


def test_socket_from_the_environment(server):
    env = {"CHATD_ADMIN_SOCKET": server.admin_socket}
    result = CliRunner().invoke(chatctl_main, ["rooms"], env=env, prog_name="chatctl")
    assert result.exit_code == 0 and result.stdout.startswith("ROOM"), result.output
