"""The README's client one-liners, run as written (issue 23 §4).

A newcomer copies a line from the README's first screen; if that line does not get them
chatting, or leaves their terminal stuck after ``/quit``, the README is wrong. So the lines are
read out of README.md itself (the indented lines of its "Connecting" section), the port
replaced by the test server's, and each is run the way a person would: the interactive clients
on a terminal of their own (a pty), the script line through ``sh -c``. A line added to the
README without a row in :data:`ON_A_TERMINAL` fails here, so nothing there goes untried.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.waiting import wait_until
from test_telnet import Screen

README = Path(__file__).resolve().parents[2] / "README.md"

#: What each interactive client needs after ``/quit`` before it exits, as the README says:
#: netcat-openbsd notices the closed connection only on its next read of the terminal.
ON_A_TERMINAL = {"nc": b"\r", "socat": b"", "telnet": b"", "chat": b""}


def _section_lines() -> tuple[str, list[str]]:
    """The Connecting section's prose and its indented command lines (comments dropped)."""
    text = README.read_text()
    section = text.split("\n## Connecting\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    commands = [line.split("  #", 1)[0].strip() for line in section.splitlines()
                if line.startswith("    ") and line.strip()]
    return section, commands


PROSE, COMMANDS = _section_lines()
INTERACTIVE = [c for c in COMMANDS if "|" not in c]
SCRIPTED = [c for c in COMMANDS if "|" in c]


def _at(command: str, port: int) -> str:
    assert "5555" in command, command
    return command.replace("5555", str(port))


def _program(command: str) -> str:
    """The executable a line runs: chatd's own ``chat`` is the venv's (installed with chatd)."""
    name = shlex.split(command)[0]
    if name == "chat":
        path = Path(sys.executable).with_name("chat")
        if not path.exists():
            pytest.skip("chat is not installed in this venv (pip install -e .)")
        return str(path)
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_the_readme_names_the_lines_this_file_runs():
    assert {shlex.split(c)[0] for c in INTERACTIVE} == set(ON_A_TERMINAL), INTERACTIVE
    assert SCRIPTED, "the README shows how to chat from a script"


@pytest.mark.parametrize("command", INTERACTIVE, ids=lambda c: shlex.split(c)[0])
def test_an_interactive_line_chats_and_exits_on_quit(server, command):
    program = _program(command)
    argv = [program, *shlex.split(_at(command, server.port))[1:]]
    bob = server.connect()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the client on a terminal of its own, as a person runs it
        os.environ["TERM"] = "xterm"
        os.execv(program, argv)
    screen = Screen(fd)
    status = None
    try:
        screen.wait_for(b"guest-")
        bob.wait_for(lambda line: line.endswith(" joined lobby"))
        os.write(fd, "hello from the README, ✓\r".encode())
        assert bob.wait_for(lambda line: line.startswith("<")).endswith(
            "> hello from the README, ✓")
        bob.send_line("and back")
        screen.wait_for(f"<{bob.nick}> and back".encode())
        os.write(fd, b"/quit\r")
        bob.wait_for(lambda line: " left lobby" in line)
        if ON_A_TERMINAL[shlex.split(command)[0]]:
            os.write(fd, ON_A_TERMINAL[shlex.split(command)[0]])

        def exited() -> bool:
            nonlocal status
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            return status is not None

        wait_until(exited, timeout=10, what=f"{argv[0]} to exit after /quit")
        assert os.waitstatus_to_exitcode(status) in (0, 1), status  # telnet says 1: closed
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.parametrize("command", SCRIPTED)
def test_the_script_line_says_its_piece_and_ends(server, command):
    _program(command.split("|", 1)[1].strip())
    bob = server.connect()
    done = subprocess.run(["sh", "-c", _at(command, server.port)], capture_output=True,
                          timeout=20, check=False)
    assert done.returncode == 0, done
    assert b"*** you are now bot" in done.stdout, done.stdout
    said = re.search(r"\\n([^\\n]*)\\n'", command).group(1)
    assert bob.wait_for(lambda line: line.startswith("<")) == f"<bot> {said}"


def _depended_on(packages: set[str]) -> set[str]:
    """What the installed ``packages`` depend on: Debian 12's ``telnet`` is a transitional
    package whose ``telnet`` binary comes from ``inetutils-telnet``."""
    shown = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}\\n", *packages],
                           capture_output=True, text=True, check=False).stdout
    return {re.split(r"[\s(:]", dep.strip())[0] for dep in re.split(r"[,|\n]", shown)
            if dep.strip()}


def test_the_debian_packages_named_are_the_ones_that_hold_the_clients():
    """``apt-get install`` with the README's package list installs every client it shows."""
    named = set(re.search(r"apt-get install ([^`]+)`", PROSE).group(1).split())
    if shutil.which("dpkg") is None:
        pytest.skip("not a Debian system")
    for name in {shlex.split(c)[0] for c in INTERACTIVE} - {"chat"}:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed")
        real = os.path.realpath(path)  # /usr/bin/nc -> alternatives -> /usr/bin/nc.openbsd
        # with merged /usr, dpkg may know the file by its /bin name
        owners = {subprocess.run(["dpkg", "-S", where], capture_output=True, text=True,
                                 check=False).stdout.split(":", 1)[0]
                  for where in (real, real.removeprefix("/usr"))} - {""}
        assert owners and owners <= named | _depended_on(named), (name, owners, named)
