"""Table and property tests for the pure protocol module (framing, decoding, parsing, names)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.line.framing import LINE_TOO_LONG, LineFramer
from chatd.line.parse import Command, Message, parse, split_word
from chatd.text import decode, fold, is_valid_name

TOO_LONG = LINE_TOO_LONG


def drain(framer: LineFramer) -> list:
    out = []
    while (line := framer.next_line()) is not None:
        out.append(line)
    return out


def frame(chunks, max_line_bytes=1024) -> list:
    """Feed ``chunks`` one by one, draining after each, as a session would."""
    framer = LineFramer(max_line_bytes)
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        out.extend(drain(framer))
    return out


def reference(stream: bytes, max_line_bytes: int) -> list:
    """What framing must yield for ``stream``, however it is cut into chunks.

    Complete lines lose their LF and one CR before it; a line over the limit becomes one
    LINE_TOO_LONG. An unterminated tail is reported as too long once it cannot fit any more
    (max_line_bytes + 1 bytes could still be a full line followed by CR).
    """
    *lines, tail = stream.split(b"\n")
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(TOO_LONG if len(line) > max_line_bytes else line)
    if len(tail) > max_line_bytes + 1:
        out.append(TOO_LONG)
    return out


# --------------------------------------------------------------------------------------------
# framing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, lines",
    [
        ([b"hello\n"], [b"hello"]),
        ([b"hello\r\n"], [b"hello"]),
        ([b"one\ntwo\r\nthree\n"], [b"one", b"two", b"three"]),
        ([b"he", b"l", b"lo\r", b"\n"], [b"hello"]),
        ([b"no newline"], []),
        ([b"\n"], [b""]),
        ([b"\r\n\r\n"], [b"", b""]),
        ([b"a\r\r\n"], [b"a\r"]),  # only the CR right before the LF is framing
        ([b"a\rb\n"], [b"a\rb"]),  # a lone CR is left for decode() to strip
        ([b"x" * 1024 + b"\n"], [b"x" * 1024]),
        ([b"x" * 1024 + b"\r\n"], [b"x" * 1024]),  # the CR does not count
        ([b"x" * 1025 + b"\n"], [TOO_LONG]),
        ([b"x" * 2000 + b"\nafter\n"], [TOO_LONG, b"after"]),
        ([b"x" * 2000, b"x" * 2000, b"x\nafter\n"], [TOO_LONG, b"after"]),
        ([b"x" * 1025, b"\n", b"ok\n"], [TOO_LONG, b"ok"]),
        ([b"x" * 1024, b"\r", b"\n"], [b"x" * 1024]),
        ([b"\xff\xfe\n"], [b"\xff\xfe"]),  # bytes pass through; decoding is separate
    ],
)
def test_framing_table(chunks, lines):
    assert frame(chunks) == lines


def test_long_line_reported_once_and_discarded_up_to_lf_across_feeds():
    framer = LineFramer(64)
    framer.feed(b"y" * 100)
    assert framer.next_line() is TOO_LONG
    assert framer.next_line() is None
    for _ in range(50):  # a megabyte-ish line keeps coming: no second report, no growth
        framer.feed(b"y" * 1000)
        assert framer.next_line() is None
        assert framer.pending_bytes <= 65
    framer.feed(b"yyy\r\nnext\n")
    assert drain(framer) == [b"next"]
    assert framer.pending_bytes == 0


def test_pending_bytes_counts_unread_input():
    framer = LineFramer(1024)
    assert framer.pending_bytes == 0
    framer.feed(b"abc\ndef")
    assert framer.pending_bytes == 7
    assert framer.next_line() == b"abc"
    assert framer.pending_bytes == 3
    assert framer.next_line() is None
    assert framer.pending_bytes == 3
    framer.feed(b"\n")
    assert framer.next_line() == b"def"
    assert framer.pending_bytes == 0


def test_lines_are_handed_out_lazily():
    """Flood control relies on lines staying buffered until asked for."""
    framer = LineFramer(1024)
    framer.feed(b"a\n" * 100)
    assert framer.pending_bytes == 200
    assert framer.next_line() == b"a"
    assert framer.pending_bytes == 198
    framer.feed(b"b\n")
    assert drain(framer) == [b"a"] * 99 + [b"b"]


stream_bytes = st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"\xff", b"\x00", b"ab\n"]),
                        max_size=80).map(b"".join)


@given(stream=stream_bytes, max_len=st.integers(1, 8), data=st.data())
def test_framing_is_independent_of_segmentation(stream, max_len, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    expected = reference(stream, max_len)
    assert frame(chunks, max_len) == expected
    assert frame([bytes([b]) for b in stream], max_len) == expected
    assert frame([stream], max_len) == expected


@given(stream=stream_bytes, max_len=st.integers(1, 8))
def test_pending_bytes_after_draining(stream, max_len):
    framer = LineFramer(max_len)
    framer.feed(stream)
    drain(framer)
    tail = stream.rsplit(b"\n", 1)[-1]
    if len(tail) <= max_len + 1:
        assert framer.pending_bytes == len(tail)
    else:  # being discarded: the recvq must not grow with it
        assert framer.pending_bytes <= max_len + 1


@given(lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20))
def test_many_lines_in_one_feed_or_byte_by_byte(lines):
    stream = b"".join(line + b"\r\n" for line in lines)
    expected = [TOO_LONG if len(ln) > 20 else ln for ln in lines]
    assert frame([stream], 20) == expected
    assert frame([bytes([b]) for b in stream], 20) == expected


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------

FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"hello", "hello"),
        (b"caf\xc3\xa9", "café"),
        (b"\xf0\x9f\x98\x80 ok", "\U0001F600 ok"),
        (b"\xff", "\ufffd"),
        (b"a\xffb\xfec", "a\ufffdb\ufffdc"),
        (b"\xc3", "\ufffd"),  # truncated sequence
        (b"\x1b[31mred\x1b[0m", "[31mred[0m"),  # ESC removed, the rest is harmless text
        (b"\x07bell", "bell"),
        (b"a\x00b\x00c", "abc"),
        (b"tab\there", "tab\there"),
        (b"a\rb", "ab"),
        (b"\x7fdel", "del"),
        (b"\xc2\x9b31m", "31m"),  # C1 CSI (U+009B) encoded in UTF-8
        (b"\xc2\x85next", "next"),  # C1 NEL
        (b"\x1b\x07\x00", ""),
        (b"", ""),
        (b"\xc2\xa0nbsp", "\xa0nbsp"),  # not a control character: kept
        ("\ufeff/nick bob".encode(), "/nick bob"),  # a leading BOM
        ("a\u202eevil\u202c b".encode(), "aevil b"),  # bidi override and pop
        ("\u2066x\u2069\u200f".encode(), "x"),  # isolates, RLM
        ("line\u2028sep".encode(), "linesep"),
        ("\U0001F468\u200d\U0001F469".encode(), "\U0001F468\u200d\U0001F469"),  # ZWJ kept
    ],
)
def test_decode_table(raw, text):
    assert decode(raw) == text


@given(st.binary(max_size=200))
def test_decode_output_is_clean_utf8_for_any_bytes(raw):
    text = decode(raw)
    assert not FORBIDDEN.search(text), repr(text)
    text.encode("utf-8")  # strict: no lone surrogates


@given(st.text(max_size=100))
def test_decode_keeps_valid_text_except_controls(text):
    assert decode(text.encode("utf-8")) == FORBIDDEN.sub("", text)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("hello", Message("hello")),
        ("hello world  ", Message("hello world  ")),
        ("", None),
        ("   ", None),
        ("\t", None),
        (" \t ", None),
        ("/nick bob", Command("nick", "bob")),
        ("/NICK bob", Command("nick", "bob")),
        ("/Join #Games", Command("join", "#Games")),
        ("/who", Command("who", "")),
        ("/quit", Command("quit", "")),
        ("/quit  see you  ", Command("quit", "see you")),
        ("/msg bob hi  there", Command("msg", "bob hi  there")),
        ("/me waves", Command("me", "waves")),
        ("/frobnicate", Command("frobnicate", "")),
        ("/msg\tbob\thi", Command("msg", "bob\thi")),  # a TAB separates the command word
        ("/nick\t\tbob ", Command("nick", "bob")),
        ("/who\t", Command("who", "")),
        ("//help", Message("/help")),
        ("//", Message("/")),
        ("// x", Message("/ x")),
        ("///", Message("//")),
        ("a /nick", Message("a /nick")),
    ],
)
def test_parse_table(text, parsed):
    assert parse(text) == parsed


@pytest.mark.parametrize(
    "text, split",
    [
        ("bob hi", ("bob", "hi")),
        ("bob\thi there ", ("bob", "hi there")),
        ("bob \t  hi", ("bob", "hi")),
        ("bob", ("bob", "")),
        ("", ("", "")),
        ("\tbob", ("", "bob")),
    ],
)
def test_split_word(text, split):
    assert split_word(text) == split


@given(st.text(max_size=60))
def test_parse_classifies_every_line(text):
    parsed = parse(text)
    if not text.strip():
        assert parsed is None
    elif text.startswith("//"):
        assert parsed == Message(text[1:])
    elif text.startswith("/"):
        assert isinstance(parsed, Command)
        assert parsed.name == parsed.name.lower()
        assert " " not in parsed.name
        assert parsed.args == parsed.args.strip()
    else:
        assert parsed == Message(text)


# --------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, valid",
    [
        ("a", True),
        ("Z", True),
        ("_", True),
        ("alice", True),
        ("Bob_42", True),
        ("a-b_c9", True),
        ("guest-1", True),
        ("_1", True),
        ("x" * 24, True),
        ("x" * 25, False),
        ("", False),
        ("-a", False),
        ("1a", False),
        ("9", False),
        ("a b", False),
        ("a.b", False),
        ("#room", False),
        ("é", False),
        ("alice\n", False),
        ("ali\x00ce", False),
        ("a/b", False),
    ],
)
def test_is_valid_name_table(name, valid):
    assert is_valid_name(name) is valid


FIRST = string.ascii_letters + "_"
REST = string.ascii_letters + string.digits + "_-"


@given(st.text(FIRST, min_size=1, max_size=1), st.text(REST, max_size=23))
def test_names_following_the_rule_are_valid(first, rest):
    assert is_valid_name(first + rest)


@given(st.text(max_size=30))
def test_is_valid_name_matches_the_rule(name):
    rule = (1 <= len(name) <= 24 and name[0] in FIRST and all(c in REST for c in name))
    assert is_valid_name(name) is rule


def test_fold_is_case_insensitive():
    assert fold("Alice") == fold("ALICE") == fold("alice")
    assert fold("Games") != fold("Gamez")

