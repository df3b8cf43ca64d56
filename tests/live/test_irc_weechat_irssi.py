"""weechat and irssi against chatd's IRC listener (SPEC §14, issue 27), each chatting with a
netcat-style line client. weechat-headless takes its start-up commands with ``-r``, later
input through its fifo plugin's pipe, and is read through its logger plugin's files; irssi runs
on a pty inside tmux, typed into with ``send-keys`` and read with ``capture-pane``. A test
skips, naming the Debian package, where a program is missing (``make test`` installs them as
root).

Both clients pace their own commands (weechat's anti-flood, 2 s a line; irssi's command queue,
about 2.5 s), so the deadlines here are generous: nothing sleeps, every wait is for a condition.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.waiting import wait_gone, wait_until
from test_irc import irc_server, joined
from test_irc_clients import need

START = 20.0  # a client's start-up and registration, on a loaded machine
PACED = 15.0  # one command through a client's own flood control


class Weechat:
    """weechat-headless (3.8) with its own ``--dir``: only the irc, logger and fifo plugins,
    the logs under ``DIR/logs`` flushed at every line, its fifo at ``DIR/weechat_fifo``."""

    def __init__(self, port: int, nick: str, directory: Path, autojoin: str = "#dev") -> None:
        self.directory = directory
        self.logs = directory / "logs"
        self.fifo = directory / "weechat_fifo"
        commands = [
            f"/set logger.file.path {self.logs}",
            "/set logger.file.flush_delay 0",
            f"/set fifo.file.path {self.fifo}",
            "/set fifo.file.enabled on",
            f"/server add chatd 127.0.0.1/{port} -notls",
            f"/set irc.server.chatd.nicks {nick}",
            f"/set irc.server.chatd.autojoin {autojoin}",
            "/connect chatd",
        ]
        argv = [need("weechat-headless"), "--dir", str(directory), "--no-script",
                "--plugins", "irc,logger,fifo"]
        for command in commands:
            argv += ["--run-command", command]
        directory.mkdir(parents=True, exist_ok=True)
        self.output = open(directory / "stdout.txt", "wb")  # closed in close()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.output,
                                     stderr=subprocess.STDOUT)

    def log(self, buffer: str) -> list[tuple[str, str]]:
        """(prefix, message) of each line logged so far for ``buffer`` (``server`` for the
        server buffer, ``#dev``, or a nick for a private buffer), nick prefixes without their
        ``@``/``+`` mode."""
        name = "server.chatd" if buffer == "server" else f"chatd.{buffer.lower()}"
        path = self.logs / f"irc.{name}.weechatlog"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split("\t", 2)
            if len(parts) == 3:
                entries.append((parts[1].lstrip("@+"), parts[2]))
        return entries

    def wait_for(self, buffer: str, prefix: str, message: str | re.Pattern) -> None:
        """Until weechat has logged ``prefix`` and ``message`` (text, or a pattern to search)
        in ``buffer``."""

        def seen():
            return any(p == prefix and (message.search(m) if isinstance(message, re.Pattern)
                                        else m == message) for p, m in self.log(buffer))

        def what():
            state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            return (f"weechat ({state}) never logged {prefix!r} {message!r} in {buffer}: "
                    f"{self.log(buffer)[-6:]}")

        wait_until(seen, timeout=START, what=what)

    def registered(self) -> None:
        """weechat's CAP negotiation and registration are done: the server buffer shows what
        was enabled and the welcome."""
        self.wait_for("server", "--", re.compile(r"^irc: client capability, enabled: "))
        self.wait_for("server", "--", re.compile(r"^Welcome to chatd, "))

    def joined(self, channel: str, nick: str) -> None:
        """weechat shows itself in ``channel``: the buffer exists, the fifo can address it."""
        self.wait_for(channel, "-->", re.compile(rf"^{nick} \(.*\) has joined {channel}$"))

    def type(self, text: str, buffer: str = "irc.server.chatd") -> None:
        """Send ``text`` (a command or a message) to weechat's ``buffer`` through the fifo."""
        data = f"{buffer} *{text}\n".encode()

        def write() -> bool:
            try:  # non-blocking: an open with no reader fails (ENXIO) rather than hangs
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENXIO):
                    return False
                raise
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return True

        wait_until(write, timeout=START, what=f"weechat's fifo {self.fifo} (to send {text!r})")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.output.close()


@pytest.fixture
def weechat(tmp_path):
    started: list[Weechat] = []

    def start(port: int, nick: str, autojoin: str = "#dev") -> Weechat:
        started.append(Weechat(port, nick, tmp_path / f"weechat-{len(started)}", autojoin))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_weechat_negotiates_every_cap_and_chats_in_one_channel(chatd, weechat):
    """weechat sends CAP LS 302, NICK and USER at once, then CAP REQ for every capability it
    knows: registration completes at its CAP END."""
    server = irc_server(chatd)
    bob = joined(server, "bob")
    client = weechat(server.irc_port, "weeuser")
    client.registered()
    enabled = next(m for _, m in client.log("server")
                   if m.startswith("irc: client capability, enabled: "))
    assert set(enabled.split(": ", 2)[2].split()) >= {"multi-prefix", "server-time"}, enabled
    server.wait_event("client_registered", nick="weeuser", protocol="irc")
    bob.expect("*** weeuser joined dev", timeout=START)  # its autojoin
    client.joined("#dev", "weeuser")
    client.type("hello from weechat", "irc.chatd.#dev")
    bob.expect("<weeuser> hello from weechat", timeout=PACED)
    bob.send_line("hello weechat")
    client.wait_for("#dev", "bob", "hello weechat")
    bob.send_line("/me waves")
    client.wait_for("#dev", " *", "bob waves")
    client.type("/me nods", "irc.chatd.#dev")
    bob.expect("* weeuser nods", timeout=PACED)
    bob.expect_silence()


def test_weechat_chats_with_line_clients_in_two_channels(chatd, weechat):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    carol = joined(server, "carol", "ops")
    client = weechat(server.irc_port, "weeuser")
    client.registered()
    bob.expect("*** weeuser joined dev", timeout=START)
    client.type("/join #ops")
    carol.expect("*** weeuser joined ops", timeout=PACED)
    client.joined("#dev", "weeuser")
    client.joined("#ops", "weeuser")
    client.type("only dev", "irc.chatd.#dev")
    bob.expect("<weeuser> only dev", timeout=PACED)
    client.type("only ops", "irc.chatd.#ops")
    carol.expect("<weeuser> only ops", timeout=PACED)
    bob.send_line("dev says")
    carol.send_line("ops says")
    client.wait_for("#dev", "bob", "dev says")
    client.wait_for("#ops", "carol", "ops says")
    assert ("carol", "ops says") not in client.log("#dev")
    assert ("bob", "dev says") not in client.log("#ops")
    bob.send_line("/msg weeuser private")
    bob.expect("*** -> weeuser: private")
    client.wait_for("bob", "bob", "private")
    client.type("private back", "irc.chatd.bob")
    bob.expect("*weeuser* private back", timeout=PACED)
    bob.expect_silence()
    carol.expect_silence()


class Irssi:
    """irssi (1.4.3) on a pty: a tmux session on a private tmux server (its socket in a
    directory of its own: a short path, as a Unix socket's must be), killed with that server
    at :meth:`close`."""

    def __init__(self, home: Path) -> None:
        self.irssi = need("irssi")
        self.rundir = tempfile.mkdtemp(prefix="chatd-tmux-")
        self.tmux = [need("tmux"), "-S", os.path.join(self.rundir, "socket")]
        self.home = home
        self.pid: int | None = None

    def start(self, port: int, nick: str) -> Irssi:
        self.home.mkdir(parents=True, exist_ok=True)
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", "irssi", "-x", "200", "-y", "50",
                   self.irssi, f"--home={self.home}", "-c", "127.0.0.1", "-p", str(port),
                   "-n", nick)
        self.pid = int(self._tmux("display-message", "-p", "-t", "irssi", "#{pane_pid}"))
        return self

    def _tmux(self, *args: str) -> str:
        # TERM for tmux's own client (CI may have none); irssi's pane gets tmux's default-terminal
        return subprocess.run([*self.tmux, *args], check=True, capture_output=True, text=True,
                              timeout=START, env={**os.environ, "TERM": "xterm"}).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "irssi")

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "irssi", "-l", text)
        self._tmux("send-keys", "-t", "irssi", "Enter")

    def wait_for(self, pattern: str) -> None:
        """Until irssi's window shows a line matching ``pattern`` (a regex)."""
        wait_until(lambda: re.search(pattern, self.screen(), re.MULTILINE), timeout=START,
                   what=lambda: f"irssi never showed {pattern!r}; its screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=START,
                       env={**os.environ, "TERM": "xterm"})
        if self.pid is not None and not wait_gone(self.pid, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            wait_gone(self.pid, 10)
        shutil.rmtree(self.rundir, ignore_errors=True)  # the tmux server leaves its socket


@pytest.fixture
def irssi(tmp_path):
    started: list[Irssi] = []

    def start(port: int, nick: str) -> Irssi:
        started.append(Irssi(tmp_path / f"irssi-{len(started)}"))
        return started[-1].start(port, nick)

    yield start
    for one in started:
        one.close()


def test_irssi_registers_through_its_cap_and_join_probe_and_chats(chatd, irssi):
    """irssi sends ``CAP LS 302`` and ``JOIN :``, waits for the 451 and the CAP reply, then
    NICK and USER after CAP END: it registers, joins and chats both ways."""
    server = irc_server(chatd)
    bob = joined(server, "bob")
    client = irssi(server.irc_port, "irssiuser")
    server.wait_event("client_registered", nick="irssiuser", protocol="irc", timeout=START)
    client.wait_for(r"Capabilities acknowledged: .*server-time")
    client.wait_for(r"Welcome to chatd, irssiuser!irssiuser@chatd")
    client.type("/join #dev")
    bob.expect("*** irssiuser joined dev", timeout=PACED)
    client.wait_for(r"irssiuser \[irssiuser@chatd\] has joined #dev")  # #dev is its window now
    client.type("hello from irssi")
    bob.expect("<irssiuser> hello from irssi", timeout=PACED)
    bob.send_line("hello irssi")
    client.wait_for(r"<[@+ ]?bob> hello irssi")
    bob.expect_silence()
