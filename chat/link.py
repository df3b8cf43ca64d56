"""One connection to chatd: making it (TCP, TLS), and the loop that owns its socket.

The thread that calls :meth:`Link.run` is the only one that reads, writes or closes the
socket (STYLE principle 1). The input loop only queues lines with :meth:`Link.send` and a
byte on a wake-up socket pair tells the loop to write them. One owner matters for TLS: an
``SSLSocket`` must not be read in one thread while another writes it (OpenSSL's ``SSL``
object is not thread-safe), which is why chatd itself keeps TLS on memory BIOs. Here the
socket is non-blocking and ``select`` waits for the server, the wake-up, or writability.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Callable

from chat.protocol import LineSplitter

CONNECT_TIMEOUT = 10.0


class ConnectFailed(Exception):
    """A connection could not be made; ``str()`` is the reason, for one line."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_socket(host: str, port: int, tls: ssl.SSLContext | None,
                timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected socket (TLS handshake done when ``tls``); raises ConnectFailed."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:  # gaierror, refused, unreachable, timeout
        raise ConnectFailed(_reason(exc)) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        sock.close()
        raise ConnectFailed(_reason(exc)) from None
    return sock


class Link:
    """A connected socket and the loop that serves it.

    Caller: any thread uses :meth:`send` and :meth:`close`; one thread runs :meth:`run`,
    which returns (with the socket closed) when the connection ends, saying why.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (sock, self._wake_r, self._wake_w):
            s.setblocking(False)
        self._lock = threading.Lock()
        self._queued = bytearray()
        self._sending = b""  # a TLS write must be retried with the same bytes
        self._closing: str | None = None
        self._lines = LineSplitter()

    # -- any thread ------------------------------------------------------------------------

    def send(self, line: str) -> None:
        """Queue one line (LF added) for the server."""
        with self._lock:
            self._queued += line.encode("utf-8", "replace") + b"\n"
        self._wake()

    def close(self, reason: str = "closed") -> None:
        """End the connection at once; :meth:`run` returns ``reason``."""
        with self._lock:
            self._closing = self._closing or reason
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):  # full (a wake-up is pending anyway) or closed
            pass

    # -- the owning thread -----------------------------------------------------------------

    def run(self, on_line: Callable[[bytes], None], on_tick: Callable[[], None] = lambda: None,
            tick: float = 0.5) -> str:
        """Serve the socket until the connection ends; returns why. ``on_line`` gets each
        line; ``on_tick`` is called when nothing happened for ``tick`` seconds."""
        try:
            return self._serve(on_line, on_tick, tick)
        except ssl.SSLError as exc:
            return f"TLS error: {exc.reason or exc}"
        except ConnectionResetError:
            return "connection reset"
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            for s in (self._sock, self._wake_r, self._wake_w):
                s.close()

    def _serve(self, on_line, on_tick, tick: float) -> str:
        while True:
            with self._lock:
                if self._closing:
                    return self._closing
                if not self._sending and self._queued:
                    self._sending, self._queued = bytes(self._queued), bytearray()
            if self._tls and self._sock.pending():
                ready = [self._sock], []
            else:
                want_write = [self._sock] if self._sending else []
                ready = select.select([self._sock, self._wake_r], want_write, [], tick)[:2]
            if not ready[0] and not ready[1]:
                on_tick()
                continue
            if self._wake_r in ready[0]:
                self._drain_wake()
            if self._sock in ready[1]:
                self._write()
            if self._sock in ready[0] and not self._read(on_line):
                return "closed by the server"

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _write(self) -> None:
        try:
            sent = self._sock.send(self._sending)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        self._sending = self._sending[sent:]

    def _read(self, on_line) -> bool:
        """Read what is there (a bounded amount: a busy room must not starve our writes);
        False once the server has closed."""
        for _ in range(16):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            if not data:
                rest = self._lines.rest()
                if rest:
                    on_line(rest)
                return False
            for line in self._lines.feed(data):
                on_line(line)
        return True
