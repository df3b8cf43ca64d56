"""A conversation driven through the real ``nc`` binary, as a netcat user would have it."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading

import pytest

NC = shutil.which("nc")
pytestmark = pytest.mark.skipif(
    NC is None, reason="nc not found: install the Debian package netcat-openbsd")


class Netcat:
    """``nc [options] 127.0.0.1 PORT`` with its stdin and stdout as pipes."""

    def __init__(self, port: int, *options: str) -> None:
        self.proc = subprocess.Popen([NC, *options, "127.0.0.1", str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, line: str, timeout: float = 5.0) -> None:
        try:
            raw = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nc printed nothing within {timeout}s, expected {line!r}")
        assert raw is not None, f"nc's output ended, expected {line!r}"
        assert raw == line.encode() + b"\r\n", raw

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def netcat(server):
    started = []

    def start(*options):
        nc = Netcat(server.port, *options)
        started.append(nc)
        return nc

    yield start
    for nc in started:
        if nc.proc.poll() is None:
            nc.proc.kill()
        nc.proc.wait(10)
        for pipe in (nc.proc.stdin, nc.proc.stdout, nc.proc.stderr):
            pipe.close()


def test_conversation_through_nc(server, netcat):
    bob = server.connect()
    bob.set_nick("bob")
    nc = netcat()
    nc.expect("*** welcome to chatd")
    nc.expect("*** you are guest-2")
    nc.expect("*** Type /help for the list of commands.")
    bob.expect("*** guest-2 joined lobby")

    nc.type("/nick netcat")
    nc.expect("*** you are now netcat")
    bob.expect("*** guest-2 is now known as netcat")

    nc.type("hello from nc")
    bob.expect("<netcat> hello from nc")
    bob.send_line("hi netcat")
    nc.expect("<bob> hi netcat")

    nc.type("/msg bob psst")
    nc.expect("*** -> bob: psst")
    bob.expect("*netcat* psst")

    bob.send_line("/me waves")
    nc.expect("* bob waves")

    nc.type("/quit bye")
    nc.expect("*** bye")
    bob.expect("*** netcat left lobby (quit: bye)")
    nc.close()
    assert nc.lines.get(timeout=5) is None, "nc printed more after /quit"


def test_nc_with_crlf_line_endings(server, netcat):
    """``nc -C`` sends CRLF as telnet does; the CR must not reach anyone."""
    bob = server.connect()
    nc = netcat("-C")
    nc.expect("*** welcome to chatd")
    nc.expect("*** you are guest-2")
    nc.expect("*** Type /help for the list of commands.")
    bob.expect("*** guest-2 joined lobby")
    nc.type("/nick telnetish")
    nc.expect("*** you are now telnetish")
    bob.expect("*** guest-2 is now known as telnetish")
    nc.type("line with crlf")
    bob.expect("<telnetish> line with crlf")


def test_nc_sees_the_shutdown_notice(server, netcat):
    nc = netcat()
    nc.expect("*** welcome to chatd")
    nc.expect("*** you are guest-1")
    nc.expect("*** Type /help for the list of commands.")
    nc.type("/who")
    nc.expect("*** in lobby: guest-1")
    assert server.terminate() == 0
    nc.expect("*** server shutting down")
    assert nc.close() == 0  # stdin closed too: nc exits as the connection is gone
    assert nc.lines.get(timeout=5) is None, "nc printed more after the shutdown notice"
