"""Real IRC programs against chatd's IRC listener (SPEC §14's judges): sic driven through a
pipe, ii through its in/out files, each chatting with a netcat-style line client in both
directions, in one channel and in two. Debian's packages (``make test`` installs them as
root); a test skips, naming the package, where one is missing."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from support.waiting import wait_until
from test_irc import irc_server, joined


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package {program})")
    return path


class Sic:
    """sic 1.1 on a pipe: its output read by a thread into ``lines``."""

    def __init__(self, port: int, nick: str) -> None:
        self.proc = subprocess.Popen([need("sic"), "-h", "127.0.0.1", "-p", str(port), "-n", nick],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, words: str) -> None:
        wait_until(lambda: any(words in line for line in self.lines), timeout=10,
                   what=f"sic never printed {words!r}: {self.lines[-5:]}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sic():
    started = []

    def start(port: int, nick: str) -> Sic:
        started.append(Sic(port, nick))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_sic_chats_with_a_line_client(chatd, sic):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    client = sic(server.irc_port, "sicuser")
    client.wait_for("376 (sicuser)")  # registered: the end of the MOTD
    client.type(":j #dev")
    bob.expect("*** sicuser joined dev")
    client.type(":m #dev hello from sic")
    bob.expect("<sicuser> hello from sic")
    bob.send_line("hello sic")
    client.wait_for("#dev        : ")
    client.wait_for("<bob> hello sic")
    client.type(":j #ops")
    carol = joined(server, "carol", "ops")
    client.type(":m #ops only ops")
    carol.expect("<sicuser> only ops")
    bob.expect_silence()
    bob.send_line("/msg sicuser private")
    client.wait_for("<bob> private")


class Ii:
    """ii 1.8: it writes what it reads to DIR/SERVER/CHANNEL/out and takes input from the
    fifo DIR/SERVER/CHANNEL/in."""

    def __init__(self, port: int, nick: str, directory: Path) -> None:
        self.directory = directory
        self.proc = subprocess.Popen([need("ii"), "-s", "127.0.0.1", "-p", str(port), "-n", nick,
                                      "-i", str(directory)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.server = directory / "127.0.0.1"

    def type(self, text: str, channel: str = "") -> None:
        fifo = (self.server / channel if channel else self.server) / "in"
        wait_until(fifo.exists, timeout=10, what=f"ii made no {fifo}")
        with open(fifo, "w") as pipe:
            pipe.write(text + "\n")

    def wait_for(self, words: str, channel: str = "") -> None:
        out = (self.server / channel if channel else self.server) / "out"
        wait_until(lambda: out.exists() and words in out.read_text(errors="replace"),
                   timeout=10, what=f"ii never wrote {words!r} to {out}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_ii_chats_with_a_line_client_in_two_channels(chatd, tmp_path):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    carol = joined(server, "carol", "ops")
    client = Ii(server.irc_port, "iiuser", tmp_path / "ii")
    try:
        client.wait_for("End of /MOTD command.")
        client.type("/j #dev")
        bob.expect("*** iiuser joined dev")
        client.type("/j #ops")
        carol.expect("*** iiuser joined ops")
        client.type("hello dev", "#dev")
        bob.expect("<iiuser> hello dev")
        client.type("hello ops", "#ops")
        carol.expect("<iiuser> hello ops")
        bob.send_line("hi ii")
        client.wait_for("<bob> hi ii", "#dev")
        carol.send_line("/me waves")
        client.wait_for("ACTION waves", "#ops")
        bob.expect_silence()
        carol.expect_silence()
    finally:
        client.close()
