"""Telnet clients (docs/protocol.md §1): negotiation is taken out of the input and answered.

The pure filter is tested as a table and under any segmentation; then the live daemon over raw
TCP; then the real ``telnet`` binary on a pseudo-terminal, where Ctrl-C makes telnet send
``IAC IP`` and ``IAC DO TIMING-MARK`` and discard all output until the server answers.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.sockets import read_until

from chatd.line.telnet import TelnetFilter

IAC, DONT, DO, WONT, WILL, SB, SE, IP, AYT, TM = 255, 254, 253, 252, 251, 250, 240, 244, 246, 6
ECHO, NAWS = 1, 31
TELNET = shutil.which("telnet")


def run(data: bytes, *, chunk: int | None = None) -> tuple[bytes, bytes]:
    filt = TelnetFilter()
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    text, answer = b"", b""
    for piece in pieces:
        t, a = filt.feed(piece)
        text, answer = text + t, answer + a
    assert not filt.pending, "every sequence in these inputs is complete"
    return text, answer


@pytest.mark.parametrize(
    "data, text, answer",
    [
        (b"hello\r\n", b"hello\r\n", b""),
        (bytes([IAC, IP, IAC, DO, TM]), b"", bytes([IAC, WILL, TM])),  # telnet's Ctrl-C
        (bytes([IAC, DO, ECHO]), b"", bytes([IAC, WONT, ECHO])),
        (bytes([IAC, WILL, NAWS]), b"", bytes([IAC, DONT, NAWS])),
        (bytes([IAC, WONT, ECHO, IAC, DONT, ECHO]), b"", b""),  # no answer: no loop
        (b"a" + bytes([IAC, IAC]) + b"b", b"a\xffb", b""),  # an escaped 0xFF is data
        (b"x" + bytes([IAC, SB, NAWS, 0, 80, IAC, IAC, 0, 24, IAC, SE]) + b"y", b"xy", b""),
        (bytes([IAC, AYT]) + b"hi\n", b"hi\n", b""),
        (b"hi" + bytes([IAC, SE]) + b"!", b"hi!", b""),  # a stray SE
        (b"caf\xff ok\xff.", b"caf\xff ok\xff.", b""),  # 0xFF before a non-command: data
    ],
)
def test_filter_table(data, text, answer):
    assert run(data) == (text, answer)
    assert run(data, chunk=1) == (text, answer), "split one byte at a time"


@given(st.binary(max_size=120), st.integers(1, 7))
def test_filter_is_independent_of_segmentation(data, chunk):
    whole, pieces = TelnetFilter(), TelnetFilter()
    expected = whole.feed(data)
    got_text, got_answer = b"", b""
    for i in range(0, len(data), chunk):
        text, answer = pieces.feed(data[i:i + chunk])
        got_text, got_answer = got_text + text, got_answer + answer
    assert (got_text, got_answer) == expected
    assert whole.pending == pieces.pending


def test_filter_output_has_no_iac_unless_escaped():
    text, _ = run(bytes([IAC, DO, ECHO]) + b"ok" + bytes([IAC, IAC]))
    assert text == b"ok\xff"


# -- the live daemon ---------------------------------------------------------------------------


def test_negotiation_is_answered_and_never_reaches_the_room(server):
    bob = server.connect()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        read_until(raw, b"*** you are ")
        bob.wait_for(lambda line: line.endswith(" joined lobby"))
        raw.sendall(b"hel" + bytes([IAC, IP, IAC, DO, TM, IAC, WILL, NAWS]) + b"lo\r\n")
        read_until(raw, bytes([IAC, WILL, TM, IAC, DONT, NAWS]))
        line = bob.wait_for(lambda line: line.startswith("<"))
        assert line.endswith("> hello"), line
        assert "\ufffd" not in line
        bob.expect_silence()
    finally:
        raw.close()


@pytest.mark.skipif(TELNET is None, reason="telnet not found: install the Debian package telnet")
def test_real_telnet_hears_the_room_after_ctrl_c(server):
    """Before the fix, telnet discarded every line after Ctrl-C: the user went deaf."""
    bob = server.connect()
    pid, fd = pty.fork()
    if pid == 0:  # the child: telnet on a terminal of its own
        os.execv(TELNET, [TELNET, "127.0.0.1", str(server.port)])
    screen = Screen(fd)
    try:
        screen.wait_for(b"*** you are guest-")
        bob.wait_for(lambda line: line.endswith(" joined lobby"))
        os.write(fd, b"\x03")  # Ctrl-C: telnet sends IAC IP, IAC DO TIMING-MARK
        screen.wait_for(b"^C")
        # Output chatd sent before it read the TIMING-MARK is rightly discarded by telnet (that
        # is what Ctrl-C asks for); once bob has this line, chatd has answered it.
        os.write(fd, b"yes\r")
        assert bob.wait_for(lambda line: line.startswith("<")).endswith("> yes")
        bob.expect_silence()  # nothing of the negotiation reached the room
        bob.send_line("can you hear me")
        screen.wait_for(f"<{bob.nick}> can you hear me".encode())
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


class Screen:
    """What a terminal client (telnet, and the README's others) prints on its terminal, read
    from the pty's master side. :meth:`wait_for` looks at the text without its colour and
    cursor escapes (CSI sequences), as a person reads it."""

    CSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = b""

    def wait_for(self, wanted: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.CSI.sub(b"", self.text):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"telnet never showed {wanted!r}; screen: {self.text!r}"
            if select.select([self.fd], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child is gone
                    chunk = b""
                assert chunk, f"telnet exited; screen: {self.text!r}"
                self.text += chunk


def test_binary_is_accepted_once_per_change():
    """RFC 856 BINARY both ways, answered only when it changes (RFC 1143: no loops)."""
    BINARY = 0
    telnet = TelnetFilter()
    assert telnet.feed(bytes([IAC, DO, BINARY, IAC, WILL, BINARY])) == \
        (b"", bytes([IAC, WILL, BINARY, IAC, DO, BINARY]))
    assert telnet.feed(bytes([IAC, DO, BINARY, IAC, WILL, BINARY])) == (b"", b"")
    assert telnet.feed(bytes([IAC, DONT, BINARY, IAC, WONT, BINARY])) == \
        (b"", bytes([IAC, WONT, BINARY, IAC, DONT, BINARY]))
    assert telnet.feed(bytes([IAC, WONT, BINARY])) == (b"", b"")


@pytest.mark.parametrize("data, text", [
    (b"\xd1\xff\xf4\xff\xfd\x06", b"\xd1\x83"),  # у: IP inside a character (and DO TM)
    (b"\xd1\xff\xf5", b"\xd1\x8f"), (b"\xe2\xff\xf3\x93", b"\xe2\x9c\x93"),  # я, ✓
    (b"\xd0\xff\xed", b"\xd0\x9a"),  # SUSP
    (b"a\xff\xf4", b"a"), (b"\xd1\x83\xff\xf4", b"\xd1\x83"),  # Ctrl-C outside: dropped
    (b"\xf0\x9f\xff\xf3", b"\xf0\x9f\x9c"),
])
def test_a_command_inside_a_character_is_the_byte_telnet_made_it_from(data, text):
    for chunk in (None, 1):  # whole, and a byte per read
        assert run(data, chunk=chunk)[0] == text


#: Cyrillic, Greek, Romanian, CJK, a check mark and an emoji: у (d1 83), я (d1 8f), ă (c4 83)
#: and ✓ (e2 9c 93) are the bytes Debian's telnet sends as IAC IP, AO and BRK when not binary.
WORLD = "Привет уя Ωμέγα ăîșț 中文字 ✓ 😀"


@pytest.mark.skipif(TELNET is None, reason="telnet not found: install the Debian package telnet")
@pytest.mark.parametrize("binary", [False, True], ids=["default mode", "toggle binary"])
def test_real_telnet_sends_non_ascii_text_intact(server, binary):
    """Before: the room saw ``Привет �� Ωμέγα �îșț 中文字 � 😀`` and ``toggle binary`` was
    refused. Now the mangled bytes are put back, and BINARY is accepted."""
    bob = server.connect()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(TELNET, [TELNET, "127.0.0.1", str(server.port)])
    screen = Screen(fd)
    try:
        screen.wait_for(b"*** you are guest-")
        bob.wait_for(lambda line: line.endswith(" joined lobby"))
        if binary:
            os.write(fd, b"\x1d")  # Ctrl-]: telnet's own prompt
            screen.wait_for(b"telnet>")
            os.write(fd, b"toggle binary\r")
            screen.wait_for(b"Negotiating binary mode")
        for text in (WORLD, "and after it, ascii", WORLD):  # the last: the answers are in
            os.write(fd, text.encode() + b"\r")
            line = bob.wait_for(lambda line: line.startswith("<"))
            assert line.endswith("> " + text), line
        if binary:
            screen.wait_for(b"Negotiating binary mode")  # (said before it is in force)
            assert b"refused" not in screen.text.lower(), screen.text
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
