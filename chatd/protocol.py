"""The chat wire protocol as pure functions: bytes in, lines and commands out.

Nothing here touches a socket or a clock, so every rule of docs/protocol.md §1 that concerns bytes and text
(framing, CRLF, UTF-8 replacement, control-character stripping, long lines, command words, name
rules) can be tested as a table and fuzzed on its own. The session thread feeds received bytes to
a :class:`LineFramer` and hands each decoded line to :func:`parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: C0 controls except TAB, DEL, and C1 controls. They would let one client drive other people's
#: terminals (ANSI escapes, bells, cursor moves), so they never leave the sender's session.
#: With them go the invisible format characters that rewrite how *other* text looks: the bidi
#: embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E,
#: U+200F, U+061C), which can make "<bob> hi" render as someone else's line; the line and
#: paragraph separators (U+2028, U+2029), which some terminals treat as newlines; and U+FEFF
#: (a BOM some clients put at the start of what they send). Joiners (U+200C, U+200D) stay:
#: emoji sequences need them.
_CONTROL_CHARS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff]")
#: Lone surrogates cannot be encoded as UTF-8. Decoded bytes never contain them, but text that
#: arrives as JSON (admin commands: "\ud800") can.
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Nicks and room names share one rule (docs/protocol.md §1).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,23}")
NAME_RULE = "1-24 characters of A-Z a-z 0-9 _ -, not starting with - or a digit"

CRLF = b"\r\n"


class LineTooLong:
    """Marker yielded by :class:`LineFramer` in place of a line that was over the limit."""

    __slots__ = ()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong()


class LineFramer:
    """Splits a TCP byte stream into lines, whatever the segmentation.

    ``feed()`` appends received bytes; ``next_line()`` returns the next complete line as raw
    bytes (LF and a CR before it removed), :data:`LINE_TOO_LONG` once for a line over
    ``max_line_bytes`` (the rest of it, up to the next LF, is then discarded as it arrives), or
    ``None`` when no complete line is buffered. Lines are handed out lazily so the session can
    pace them (flood control) while ``pending_bytes`` tells how much unread input waits.
    """

    __slots__ = ("max_line_bytes", "_buf", "_pos", "_discarding", "seen_lf")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._pos = 0
        self._discarding = False
        #: Whether this stream has ended a line with LF yet: a client that never has (the
        #: teaching client: one send() per message) gets its partial lines taken whole after
        #: a pause (:meth:`take_partial`, session.py); one that has never does.
        self.seen_lf = False

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned as lines (the session's recvq)."""
        return len(self._buf) - self._pos

    def state(self) -> tuple[bytes, bool]:
        """(the bytes received but not yet returned, whether the rest of a too-long line is
        being discarded): what an upgrade hands to the next process (upgrade.py), with
        ``seen_lf``."""
        return self._buf[self._pos:], self._discarding

    def restore(self, unread: bytes, discarding: bool, seen_lf: bool = True) -> None:
        """Take over what :meth:`state` returned in another process."""
        self._buf, self._pos, self._discarding = unread, 0, discarding
        self.seen_lf = seen_lf

    def take_partial(self) -> bytes | None:
        """The partial line buffered (no LF yet), as a whole line, or None if there is none
        (or it is the rest of a line too long, being discarded). The caller decides when: a
        stream that has never sent LF, after a pause (docs/protocol.md §1). The pause also ends
        a line too long that was being discarded: for such a stream it is the end of the line."""
        if self._discarding:
            self._buf, self._pos, self._discarding = b"", 0, False
            return None
        if self.pending_bytes == 0:
            return None
        line = self._buf[self._pos:]
        self._buf, self._pos = b"", 0
        return line[:-1] if line.endswith(b"\r") else line

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_line(self) -> bytes | LineTooLong | None:
        while True:
            buf, pos = self._buf, self._pos
            end = buf.find(b"\n", pos)
            if end < 0:
                return self._partial()
            self._pos = end + 1
            self.seen_lf = True
            if self._discarding:
                self._discarding = False
                continue
            line = buf[pos:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line_bytes:
                return LINE_TOO_LONG
            return line

    def _partial(self) -> LineTooLong | None:
        """No LF buffered: a partial line over the limit is reported now and dropped as it comes."""
        if self.pending_bytes <= self.max_line_bytes + 1:  # +1: room for a CR before the LF
            return None
        self._buf, self._pos = b"", 0
        if self._discarding:
            return None
        self._discarding = True
        return LINE_TOO_LONG


def decode(raw: bytes) -> str:
    """Raw line bytes to display-safe text: invalid UTF-8 replaced, controls removed."""
    return sanitize(raw.decode("utf-8", "replace"))


def sanitize(text: str) -> str:
    """``text`` without control and bidi/format characters (TAB kept), safe to show on others'
    terminals. (Every character removed is non-printable to Python, so the fast path holds.)"""
    if text.isprintable():
        return text
    return _SURROGATES.sub("\ufffd", _CONTROL_CHARS.sub("", text))


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def fold(name: str) -> str:
    """The case-insensitive key under which a nick or room name is unique."""
    return name.casefold()


@dataclass(frozen=True, slots=True)
class Message:
    """A line that goes to the sender's room as chat text."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A ``/word args`` line; ``name`` is lower-cased, ``args`` has its outer spaces removed."""

    name: str
    args: str


def parse(text: str) -> Message | Command | None:
    """Classify one decoded line. Empty (or all-blank) lines give ``None`` and are ignored."""
    if not text.strip():
        return None
    if not text.startswith("/"):
        return Message(text)
    if text.startswith("//"):
        return Message(text[1:])
    word, args = split_word(text[1:])
    return Command(word.lower(), args)


_WORD = re.compile(r"[^ \t]*")


def split_word(text: str) -> tuple[str, str]:
    """``"bob  hi there"`` -> ``("bob", "hi there")``: the first word (ended by a space or a
    TAB: telnet users and pasted text use both) and the rest without its outer whitespace."""
    word = _WORD.match(text).group()
    return word, text[len(word):].strip()
