"""A netcat-like chat client over a real TCP socket, reading whole CRLF lines.

:class:`ChatClient` has ``connect()``, ``send_line()``, ``send_raw()``, ``read_line()``,
``expect()``, ``wait_for()``, ``sync()``, ``expect_silence()``, ``expect_closed()``,
``set_nick()``, ``join()``, ``close()`` (clean FIN), ``reset()`` (RST), ``abort()``;
``received``, ``skipped``.

Ordering rule for tests: a line that another client's action causes may be queued just after
that client got its own reply. So expect such notices explicitly (``b.expect("*** a left
lobby")``) before relying on "the next line is X"; ``sync()``/``expect_silence()`` are exact for
a client's own actions and can only miss (never invent) a stray line caused by someone else.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

from support.sockets import rst_close


class ConnectionClosed(AssertionError):
    """The server closed (or reset) the connection while the test expected a line."""


class ChatClient:
    """A netcat-like client over a real TCP socket that reads whole CRLF lines.

    Every line read is appended to ``received`` (the transcript, for diagnostics); the lines that
    the last :meth:`wait_for` skipped are in ``skipped``. ``nick`` is the client's current nick as
    far as the helpers know it (set by :meth:`connect` and :meth:`set_nick`).
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.nick: str | None = None
        self.local_port: int | None = None
        self.received: list[str] = []
        self.skipped: list[str] = []
        self.replayed: list[str] = []  # history entries replayed with the greeting
        self.eof = False
        self.was_reset = False
        self._buf = bytearray()

    def __repr__(self) -> str:
        return f"<ChatClient {self.nick or '?'} :{self.local_port}>"

    # -- connecting --------------------------------------------------------------------------

    def connect(self, port: int, host: str = "127.0.0.1", *, greet: bool = True,
                motd: list[str] | None = None, server_name: str | None = None,
                rcvbuf: int | None = None, source: str | None = None,
                timeout: float = 5.0) -> ChatClient:
        """Connect and, with ``greet``, read the greeting, the nick and the MOTD.

        ``motd`` lists the expected MOTD lines (without ``*** ``); when it is None the MOTD is
        whatever arrives before the answer to a ``/who`` barrier. ``rcvbuf`` sets SO_RCVBUF
        before connecting (a client that will never read); ``source`` binds a local address
        (another 127.x address counts as another IP).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.local_port = sock.getsockname()[1]
        if greet:
            self.read_greeting(motd, server_name, timeout)
        return self

    def read_greeting(self, motd=None, server_name=None, timeout: float = 5.0) -> list[str]:
        """Read ``*** welcome to NAME``, ``*** you are NICK`` and the MOTD; returns the MOTD."""
        welcome = self.read_line(timeout)
        assert welcome.startswith("*** welcome to "), f"not a greeting: {welcome!r}"
        if server_name is not None:
            assert welcome == f"*** welcome to {server_name}", welcome
        you_are = self.read_line(timeout)
        m = re.fullmatch(r"\*\*\* you are (\S+)", you_are)
        assert m, f"second greeting line is not '*** you are NICK': {you_are!r}"
        self.nick = m.group(1)
        if motd is None:
            lines = self.sync(timeout)
        else:
            lines = [self.read_line(timeout) for _ in motd]
            assert lines == [f"*** {line}" for line in motd], "wrong MOTD"
        lines, replayed = split_history(lines)
        self.replayed = self.replayed or replayed
        assert all(line.startswith("*** ") for line in lines), lines
        return [line[4:] for line in lines]

    # -- sending -----------------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        self.send_raw(text.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- reading -----------------------------------------------------------------------------

    def read_line(self, timeout: float = 5.0) -> str:
        """The next line, without its CRLF. Fails if none arrives in time or the peer closes."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                assert raw.endswith(b"\r\n"), f"{self!r}: line not terminated by CRLF: {raw!r}"
                line = raw[:-2].decode("utf-8")  # strict: the server only sends UTF-8
                self.received.append(line)
                return line
            if self.eof:
                raise ConnectionClosed(
                    f"{self!r}: connection {'reset' if self.was_reset else 'closed'} by the "
                    f"server (partial line {bytes(self._buf)[:200]!r}); last lines: "
                    f"{self.received[-8:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self!r}: no line within {timeout}s; last lines: "
                                     f"{self.received[-8:]}")
            self._recv(remaining)

    def _recv(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except (TimeoutError, BlockingIOError):
            return
        except ConnectionResetError:
            self.eof = self.was_reset = True
            return
        if data:
            self._buf += data
        else:
            self.eof = True

    def expect(self, line: str, timeout: float = 5.0) -> str:
        """The next line must be exactly ``line``."""
        got = self.read_line(timeout)
        assert got == line, f"{self!r}: expected {line!r}, got {got!r}"
        return got

    def wait_for(self, match: str | Callable[[str], bool], timeout: float = 5.0) -> str:
        """Read until a line equals ``match`` (or satisfies it, if callable); returns it.

        The lines read on the way are kept in ``skipped`` (and in ``received``).
        """
        pred = match if callable(match) else (lambda line: line == match)
        deadline = time.monotonic() + timeout
        self.skipped = []
        while True:
            try:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
            except AssertionError as exc:  # keeps the type: ConnectionClosed stays one
                raise type(exc)(f"waiting for {match!r}, skipped {self.skipped[-8:]}: {exc}") from None
            if pred(line):
                return line
            self.skipped.append(line)

    def saw(self, line: str, timeout: float = 5.0) -> None:
        """``line`` was read already (perhaps skipped by an earlier wait) or arrives in time.

        For a line whose order relative to another awaited line is not part of the contract,
        e.g. a sender's last line and a notice raised on another node.
        """
        if line not in self.received:
            self.wait_for(line, timeout)

    def sync(self, timeout: float = 5.0) -> list[str]:
        """Round-trip barrier: send ``/who``, return every line that arrived before its answer.

        The server handles one client's lines in order, so once the answer is here everything
        this client sent earlier has been handled, and whatever the server queued for it before
        handling ``/who`` has been read.
        """
        self.send_line("/who")
        self.wait_for(lambda line: line.startswith("*** in "), timeout)
        return list(self.skipped)

    def expect_silence(self, timeout: float = 5.0) -> None:
        """Nothing arrived that was not read yet (checked with a :meth:`sync` round trip)."""
        extra = self.sync(timeout)
        assert extra == [], f"{self!r}: unexpected lines {extra}"

    def expect_closed(self, timeout: float = 5.0) -> list[str]:
        """Read until the server closes the connection; returns the lines read on the way."""
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            try:
                lines.append(self.read_line(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return lines
            except AssertionError:
                raise AssertionError(f"{self!r}: still open after {timeout}s; read {lines}") from None

    # -- conveniences ------------------------------------------------------------------------

    def set_nick(self, nick: str, timeout: float = 5.0) -> None:
        self.send_line(f"/nick {nick}")
        self.expect(f"*** you are now {nick}", timeout)
        self.nick = nick

    def join(self, room: str, timeout: float = 5.0) -> int:
        """``/join room``; returns the member count from the reply."""
        self.send_line(f"/join {room}")
        line = self.wait_for(lambda ln: ln.startswith("*** you joined ") or ln.startswith("*** error"),
                             timeout)
        m = re.fullmatch(r"\*\*\* you joined (\S+) \((\d+) members?\)", line)
        assert m, f"{self!r}: /join {room}: {line!r}"
        return int(m.group(2))

    def close(self, timeout: float = 5.0) -> None:
        """Hang up cleanly, as netcat does at the end of its input.

        Sends FIN, then reads (into ``received``) until the server closes too. Closing a socket
        with unread input would send an RST instead, which the server rightly reports as
        ``connection reset``; :meth:`reset` does that on purpose.
        """
        if self.sock is None or self.sock.fileno() < 0:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while not self.eof and time.monotonic() < deadline:
                self._recv(deadline - time.monotonic())
        except OSError:
            pass
        self.sock.close()

    def abort(self) -> None:
        """Close at once, whatever is unread (teardown)."""
        if self.sock is not None:
            self.sock.close()

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed peer would."""
        rst_close(self.sock)


def split_history(lines: list[str]) -> tuple[list[str], list[str]]:
    """``lines`` without a SPEC §10 history block, and the block's entries."""
    start = next((i for i, ln in enumerate(lines) if ln.startswith("*** history of ")), None)
    if start is None:
        return lines, []
    end = lines.index("*** end of history", start)
    return lines[:start] + lines[end + 1:], lines[start + 1:end]
