"""``chat``, the terminal client (docs/protocol.md §15, SPEC §15), run for real.

The real ``python -m chat`` against a real chatd: on a pseudo-terminal (prompt_toolkit, with
lines arriving while a line is half typed), as a pipe, across a server restart, failing to
connect, and over TLS with a self-signed certificate. Its pure parts (the renderer, the
backoff, what the server's lines mean) are tables in test_chatclient_parts.py.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from support.paths import REPO
from support.waiting import wait_until
from test_tls import start_tls

from chat.render import NOTICE

CHAT = [sys.executable, "-m", "chat"]


def chat_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CHAT_PASSWORD")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


# -- on a terminal -----------------------------------------------------------------------------


class Terminal:
    """``chat`` on a pseudo-terminal of its own (80x24, TERM=xterm), and what it showed."""

    def __init__(self, args, **env) -> None:
        # No cursor-position requests: the test's "terminal" would never answer them.
        environ = chat_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", **env)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: set the window size, become chat
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            os.execve(sys.executable, [*CHAT, *args], environ)
        self.screen = b""
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        if not select.select([self.fd], [], [], max(0.0, timeout))[0]:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child is gone
            chunk = b""
        self.screen += chunk
        return bool(chunk)

    def wait_for(self, wanted: bytes | re.Pattern, since: int = 0, timeout: float = 15.0) -> int:
        """Until ``wanted`` is on screen after offset ``since``; returns where it ends."""
        deadline = time.monotonic() + timeout
        while True:
            found = (re.compile(re.escape(wanted)) if isinstance(wanted, bytes) else wanted
                     ).search(self.screen, since)
            if found:
                return found.end()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never showed {wanted!r}; screen: {self.screen[-3000:]!r}"
            assert self._read(remaining), f"chat exited before {wanted!r}: {self.screen[-3000:]!r}"

    def wait_prompt(self, timeout: float = 15.0) -> None:
        """Until the prompt is up: prompt_toolkit has put the terminal in raw mode and turned
        bracketed paste on (off again when a prompt ends). A Ctrl-D typed before that is the
        tty's end-of-file, not a key."""
        deadline = time.monotonic() + timeout
        while self.screen.rfind(b"\x1b[?2004h") <= self.screen.rfind(b"\x1b[?2004l"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no prompt; screen: {self.screen[-3000:]!r}"
            assert self._read(remaining), f"chat exited: {self.screen[-3000:]!r}"

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            assert time.monotonic() < deadline, f"chat still running; screen: {self.screen[-3000:]!r}"
            self._read(0.05)
        while self._read(0):  # the rest of what it printed
            pass
        assert b"Traceback" not in self.screen, self.screen.decode("utf-8", "replace")
        return self.status

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _kept(make):
    """``make`` as a fixture's factory that also remembers what it made, to end it after."""
    made = []

    def start(*args, **env):
        made.append(make(*args, **env))
        return made[-1]

    return start, made


@pytest.fixture
def terminal():
    start, made = _kept(lambda *args, **env: Terminal(args, **env))
    yield start
    for term in made:
        term.close()


def test_lines_arrive_above_a_half_typed_line_which_is_sent_whole(server, terminal):
    bob = server.connect()
    bob.set_nick("bob")
    term = terminal("127.0.0.1", str(server.port), "--nick", "alice")
    term.wait_for(b"you are now alice")
    term.wait_prompt()
    bob.wait_for("*** guest-2 is now known as alice")
    term.type(b"half a li")  # no Enter: the line is being typed
    at = term.wait_for(b"half a li")
    for i in range(3):
        bob.send_line(f"meanwhile {i}")
    at = term.wait_for(re.compile(rb"\d\d:\d\d\S* <\S*bob\S*> meanwhile 2"), since=at)
    # prompt_toolkit drew the prompt again below the new lines, with the text as it was
    term.wait_for(b"half a li", since=at)
    assert all(f"> meanwhile {i}\r\n".encode() in term.screen for i in range(3)), term.screen
    assert b"\x1b[36m*** you are now alice" in term.screen, "notices in colour on a terminal"
    term.type(b"ne\r")
    bob.expect("<alice> half a line")
    term.type(b"/quit see you\r")
    bob.expect("*** alice left lobby (quit: see you)")
    assert term.wait_exit() == 0


@pytest.mark.parametrize("key, reason", [(b"\x03", "Ctrl-C"), (b"\x04", "Ctrl-D")])
def test_ctrl_c_and_ctrl_d_leave_with_status_0(server, terminal, key, reason):
    bob = server.connect()
    term = terminal("127.0.0.1", str(server.port), "--nick", "carol", NO_COLOR="1")
    term.wait_for(b"you are now carol")
    bob.wait_for("*** guest-2 is now known as carol")
    bob.send_line("hello carol")
    # NO_COLOR: the time and the line, no colour around them
    term.wait_for(re.compile(rb"\d\d:\d\d <guest-1> hello carol"))
    term.wait_prompt()
    assert NOTICE.encode() not in term.screen
    term.type(key)
    assert term.wait_exit() == 0, reason
    bob.expect("*** carol left lobby (quit)")


# -- as a pipe ---------------------------------------------------------------------------------


class Piped:
    """``chat`` with pipes for stdin, stdout and stderr; two threads collect the output."""

    def __init__(self, *args, **env) -> None:
        self.proc = subprocess.Popen([*CHAT, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=chat_env(**env))
        self.out = b""
        self.err = b""
        self._lock = threading.Lock()
        self._collectors = [threading.Thread(target=self._collect, args=(pipe, name), daemon=True)
                            for pipe, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for thread in self._collectors:
            thread.start()

    def _collect(self, pipe, name) -> None:
        while chunk := pipe.read1(65536):
            with self._lock:
                setattr(self, name, getattr(self, name) + chunk)

    def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_out(self, wanted: bytes, timeout: float = 15.0) -> None:
        wait_until(lambda: wanted in self.out, timeout,
                   lambda: f"{wanted!r} on stdout; got {self.out!r}, stderr {self.err!r}")

    def wait_err(self, wanted: bytes, timeout: float = 15.0) -> None:
        wait_until(lambda: wanted in self.err, timeout,
                   lambda: f"{wanted!r} on stderr; got {self.err!r}, stdout {self.out[-500:]!r}")

    def finish(self, timeout: float = 15.0) -> int:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        status = self.proc.wait(timeout)
        for thread in self._collectors:  # the pipes are at EOF: the rest is collected
            thread.join(5)
        assert b"Traceback" not in self.err, self.err.decode()
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def piped():
    start, made = _kept(Piped)
    yield start
    for chat in made:
        chat.kill()


def test_pipe_mode_sends_stdin_prints_lines_as_received_and_quits_at_eof(server, piped):
    bob = server.connect()
    bob.set_nick("bob")
    chat = piped("127.0.0.1", str(server.port), "--nick", "x")
    chat.wait_out(b"*** you are now x\n")
    bob.wait_for("*** guest-2 is now known as x")
    chat.type("hello")
    bob.expect("<x> hello")
    bob.send_line("hi x, \u00e9t\u00e9 \u2713")
    chat.wait_out("<bob> hi x, \u00e9t\u00e9 \u2713\n".encode())
    assert chat.finish() == 0, chat.err
    bob.expect("*** x left lobby (quit)")
    assert chat.out.startswith(b"*** welcome to chatd\n*** you are guest-2\n"), chat.out
    assert b"\x1b" not in chat.out and b"\r" not in chat.out, "exactly as received, no colour"
    assert chat.out.endswith(b"*** bye\n"), chat.out
    assert chat.err == b""


def test_printf_into_chat(server):
    bob = server.connect()
    result = subprocess.run([*CHAT, "127.0.0.1", str(server.port), "--nick", "x", "--room",
                             "#dev"], input=b"hello\n/who\n", capture_output=True, timeout=30,
                            env=chat_env(), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"*** you are now x\n*** you joined dev (1 member)\n"
                                  b"*** in dev: @x\n*** bye\n"), result.stdout
    bob.wait_for("*** x left lobby")
    assert result.stderr == b""


def test_eof_waits_while_flood_control_paces_the_lines_before_quit(server):
    """40 lines at chatd's default rate (5 lines/s after a burst of 10) take it 6 s: with a
    fixed 5 s wait for the close after /quit, chat hung up before the server said bye."""
    bob = server.connect()
    lines = "".join(f"line {i}\n" for i in range(40)).encode()
    proc = subprocess.Popen([*CHAT, "127.0.0.1", str(server.port), "--nick", "x"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=chat_env())
    try:
        out, err = proc.communicate(lines, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert out.endswith(b"*** bye\n"), out
    for i in range(40):
        bob.wait_for(f"<x> line {i}", timeout=15)
    bob.expect("*** x left lobby (quit)")


# -- reconnecting ------------------------------------------------------------------------------


def members(client, room: str) -> str:
    client.send_line("/who")
    return client.wait_for(lambda line: line.startswith(f"*** in {room}: "))


def test_a_server_restart_ends_in_a_reconnect_with_the_same_nick_and_room(chatd, piped):
    first = chatd()
    port = first.port
    chat = piped("127.0.0.1", str(port), "--nick", "dora", "--room", "dev")
    chat.wait_out(b"*** you joined dev (1 member)\n")
    chat.type("/nick dora2")  # changed during the session: this one is restored
    chat.wait_out(b"*** you are now dora2\n")
    assert first.terminate() == 0
    chat.wait_err(b"*** connection lost (")
    second = chatd(args=["--port", str(port)])
    chat.wait_err(b"*** reconnected as dora2 in dev\n")
    eve = second.connect()
    eve.join("dev")
    assert members(eve, "dev") == f"*** in dev: @dora2, {eve.nick}"
    chat.type("back again")
    eve.expect("<dora2> back again")
    assert chat.finish() == 0
    # one line per event: lost, then a failure or more while the server was down, then back
    notices = chat.err.decode().splitlines()
    assert notices[0].startswith("*** connection lost"), notices
    assert notices[-1] == "*** reconnected as dora2 in dev", notices
    assert all(re.fullmatch(r"\*\*\* cannot reconnect: .*; reconnecting in \d+\.\d s…", n)
               for n in notices[1:-1]), notices


def test_login_is_taken_back_after_a_restart_and_a_second_login_ends_the_first(chatd, piped,
                                                                              tmp_path):
    state = str(tmp_path / "state")
    first = chatd(args=["--state-dir", state])
    port = first.port
    owner = first.connect()
    owner.set_nick("dora")
    owner.send_line("/register dora-horse-1")
    owner.expect("*** registered dora")
    owner.close()
    chat = piped("127.0.0.1", str(port), "--login", "dora", "--room", "dev",
                 CHAT_PASSWORD="dora-horse-1")
    chat.wait_out(b"*** logged in as dora\n")
    chat.wait_out(b"*** you joined dev (1 member)\n")
    assert first.terminate() == 0
    second = chatd(args=["--port", str(port), "--state-dir", state])
    chat.wait_err(b"*** reconnected as dora in dev\n")
    eve = second.connect()
    eve.join("dev")
    chat.type("logged in again")
    eve.expect("<dora> logged in again")
    other = second.connect()  # the same account elsewhere: this chat must not come back
    other.send_line("/login dora dora-horse-1")
    other.wait_for("*** logged in as dora")
    chat.wait_err(b"*** not reconnecting: logged in elsewhere\n")
    assert chat.finish() == 1
    assert b"dora-horse-1" not in chat.out + chat.err


def test_login_without_a_terminal_needs_chat_password(server):
    result = subprocess.run([*CHAT, "127.0.0.1", str(server.port), "--login", "dora"],
                            input=b"", capture_output=True, timeout=30, env=chat_env(),
                            check=False)
    assert result.returncode == 2
    assert b"--login needs CHAT_PASSWORD when stdin is not a terminal" in result.stderr


def test_a_kicked_client_does_not_come_back(server, piped):
    chat = piped("127.0.0.1", str(server.port), "--nick", "fred")
    chat.wait_out(b"*** you are now fred\n")
    cid = server.wait_event("client_connected")["client_id"]
    subprocess.run([sys.executable, "-m", "chatctl", "--socket", server.admin_socket, "kick",
                    str(cid), "-r", "flooding"], check=True, capture_output=True, timeout=30,
                   env=chat_env())
    assert chat.proc.wait(15) == 1
    chat.finish()
    assert chat.out.endswith(b"*** you were kicked: flooding\n"), chat.out
    assert chat.err == b"*** not reconnecting: you were kicked\n"


# -- failing to connect ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_server_is_one_line_and_status_1():
    port = free_port()
    result = subprocess.run([*CHAT, "127.0.0.1", str(port)], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30, env=chat_env(), check=False)
    assert result.returncode == 1
    assert result.stderr == f"chat: cannot connect to 127.0.0.1:{port}: Connection refused\n".encode()
    assert result.stdout == b""


def test_a_refusing_server_is_one_line_with_its_reason(chatd):
    srv = chatd(limits={"max_clients_per_ip": 1})
    srv.connect()
    result = subprocess.run([*CHAT, "127.0.0.1", str(srv.port)], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30, env=chat_env(), check=False)
    assert result.returncode == 1
    assert result.stderr == (f"chat: cannot connect to 127.0.0.1:{srv.port}: too many "
                             "connections from your address\n").encode()


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(chatd, tmp_path):
    """A chatd with a TLS listener and a self-signed certificate for localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary (Debian package openssl)")
    return start_tls(chatd, tmp_path)


def test_tls_checks_the_certificate(tls_server):
    result = subprocess.run([*CHAT, "--tls", "localhost", str(tls_server.tls_port)],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                            env=chat_env(), check=False)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"chat: cannot connect to localhost:{tls_server.tls_port}: certificate verify failed: "), lines


def test_tls_insecure_works_and_warns_once(tls_server):
    bob = tls_server.connect()
    result = subprocess.run([*CHAT, "--tls", "--insecure", "127.0.0.1", str(tls_server.tls_port),
                             "--nick", "tess"], input=b"over tls\n/who\n", capture_output=True,
                            timeout=30, env=chat_env(), check=False)
    assert result.returncode == 0, result.stderr
    bob.wait_for("<tess> over tls")
    assert f"*** in lobby: {bob.nick}, tess\n*** bye\n".encode() in result.stdout, result.stdout
    warning = result.stderr.decode().splitlines()
    assert len(warning) == 1 and warning[0].startswith("chat: warning: --insecure"), warning
    tls_server.wait_event("client_connected", tls=True)
