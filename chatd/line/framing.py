"""The line protocol's framing: a TCP byte stream cut into lines, whatever the segmentation.

Pure (no socket, no clock): the session thread feeds what it received to a
:class:`LineFramer` and takes lines out at its own pace (docs/protocol.md §1.2). The admin
socket frames its JSON requests with it too.
"""

from __future__ import annotations

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

    __slots__ = ("_buf", "_discarding", "_pos", "max_line_bytes", "seen_lf")

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
