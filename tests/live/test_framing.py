"""docs/protocol.md §1 framing and sanitising over real TCP: segmentation, CRLF, bad bytes, long lines."""

from __future__ import annotations

import re

import pytest

CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


@pytest.fixture
def pair(server):
    """sender (guest-1) and receiver (guest-2), every notice consumed."""
    return server.connect_many(2)


def assert_clean(client):
    """Nothing a client ever received may carry a control character but TAB."""
    for line in client.received:
        assert not CONTROL.search(line), f"control character reached {client!r}: {line!r}"


def test_message_sent_one_byte_at_a_time(pair):
    sender, receiver = pair
    for byte in b"hello, one byte at a time\r\n":
        sender.send_raw(bytes([byte]))
    receiver.expect("<guest-1> hello, one byte at a time")
    sender.expect_silence()


def test_command_sent_one_byte_at_a_time(pair):
    sender, receiver = pair
    for byte in b"/nick slowpoke\n":
        sender.send_raw(bytes([byte]))
    sender.expect("*** you are now slowpoke")
    receiver.expect("*** guest-1 is now known as slowpoke")


def test_utf8_character_split_across_segments(pair):
    sender, receiver = pair
    data = "café ✓\n".encode()
    for i in range(len(data)):
        sender.send_raw(data[i:i + 1])
    receiver.expect("<guest-1> café ✓")


def test_three_lines_in_one_send(pair):
    sender, receiver = pair
    sender.send_raw(b"one\ntwo\r\nthree\n")
    receiver.expect("<guest-1> one")
    receiver.expect("<guest-1> two")
    receiver.expect("<guest-1> three")
    sender.expect_silence()


def test_lines_and_commands_mixed_in_one_send(pair):
    sender, receiver = pair
    sender.send_raw(b"before\n/nick mixed\nafter\n/who\n")
    sender.expect("*** you are now mixed")
    assert sender.read_line().startswith("*** in lobby: ")
    receiver.expect("<guest-1> before")
    receiver.expect("*** guest-1 is now known as mixed")
    receiver.expect("<mixed> after")


def test_line_split_inside_crlf(pair):
    sender, receiver = pair
    sender.send_raw(b"split\r")
    sender.send_raw(b"\nnext")
    sender.send_raw(b"\n")
    receiver.expect("<guest-1> split")
    receiver.expect("<guest-1> next")


def test_invalid_utf8_is_replaced(pair):
    sender, receiver = pair
    sender.send_raw(b"caf\xc3\xa9 \xff ok \xc3\n")
    receiver.expect("<guest-1> café \ufffd ok \ufffd")
    sender.expect_silence()


def test_invalid_utf8_in_a_nick_is_refused(pair):
    sender, receiver = pair
    sender.send_raw(b"/nick ab\xffcd\n")
    line = sender.read_line()
    assert line.startswith("*** error: invalid nick "), line
    receiver.expect_silence()


def test_ansi_escapes_and_controls_are_stripped(pair):
    sender, receiver = pair
    sender.send_raw(b"\x1b[2J\x1b[31mred\x1b[0m \x07bell \xc2\x9b1mcsi \x7fdel\tkeep-tab\n")
    receiver.expect("<guest-1> [2J[31mred[0m bell 1mcsi del\tkeep-tab")
    assert_clean(receiver)
    sender.expect_silence()


def test_nul_bytes_are_stripped(pair):
    sender, receiver = pair
    sender.send_raw(b"a\x00b\x00\x00c\n")
    receiver.expect("<guest-1> abc")
    assert_clean(receiver)


def test_line_of_only_controls_is_ignored(pair):
    sender, receiver = pair
    sender.send_raw(b"\x1b\x07\x00\x7f\r\n")
    sender.expect_silence()
    receiver.expect_silence()


def test_controls_are_stripped_from_commands_too(pair):
    sender, receiver = pair
    sender.send_raw(b"/me \x1b[5mblinks\x07\n")
    receiver.expect("* guest-1 [5mblinks")
    sender.send_raw(b"/msg guest-2 \x1b]0;pwned\x07hi\n")
    sender.wait_for("*** -> guest-2: ]0;pwnedhi")  # after its own /me, if the server echoes it
    receiver.expect("*guest-1* ]0;pwnedhi")
    sender.send_raw(b"/quit \x1b[1mbye\n")
    receiver.expect("*** guest-1 left lobby (quit: [1mbye)")
    assert_clean(receiver)
    assert_clean(sender)


def test_a_megabyte_without_newline(pair):
    sender, receiver = pair
    sender.send_raw(b"x" * 1_000_000)
    sender.expect("*** error: line too long (max 1024 bytes)", timeout=15)
    sender.send_raw(b"still the long line\nhello after\n")
    receiver.expect("<guest-1> hello after")
    receiver.expect_silence()
    sender.expect_silence()  # exactly one error line, connection alive


def test_long_line_and_next_line_in_one_send(pair):
    sender, receiver = pair
    sender.send_raw(b"y" * 5000 + b"\nnext line\n")
    sender.expect("*** error: line too long (max 1024 bytes)")
    receiver.expect("<guest-1> next line")
    sender.expect_silence()
    receiver.expect_silence()


def test_line_limit_is_exact_and_counted_in_bytes(chatd):
    srv = chatd(limits={"max_line_bytes": 64})
    sender, receiver = srv.connect_many(2)
    sender.send_line("a" * 64)
    receiver.expect("<guest-1> " + "a" * 64)
    sender.send_raw(b"b" * 64 + b"\r\n")  # the CR before the LF is not part of the line
    receiver.expect("<guest-1> " + "b" * 64)
    sender.send_line("c" * 65)
    sender.expect("*** error: line too long (max 64 bytes)")
    sender.send_line("é" * 33)  # 33 characters, 66 bytes
    sender.expect("*** error: line too long (max 64 bytes)")
    sender.send_line("é" * 32)
    receiver.expect("<guest-1> " + "é" * 32)
    sender.expect_silence()
    receiver.expect_silence()


def test_long_command_line_is_refused_too(chatd):
    srv = chatd(limits={"max_line_bytes": 64})
    client = srv.connect()
    client.send_line("/nick " + "n" * 100)
    client.expect("*** error: line too long (max 64 bytes)")
    client.expect_silence()
