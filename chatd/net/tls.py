"""TLS for the optional TLS listener, on memory BIOs so two threads can share one connection.

chatd reads a connection on its session thread and writes it on the flusher thread, with the
socket in blocking mode for the reader and ``MSG_DONTWAIT`` for the writer. ``ssl.SSLSocket``
fits neither half: it refuses send flags, and an OpenSSL connection must not be used by two
threads at once. So TLS here is pure computation on an ``ssl.SSLObject`` with memory BIOs:

- the session thread receives raw bytes and calls :meth:`TlsChannel.decrypt`;
- the flusher calls :meth:`TlsChannel.encrypt` and sends the result like any other bytes
  (so sendq limits, coalescing and backlogs work unchanged, on the encrypted bytes);
- ``_lock`` makes the two calls take turns on the SSLObject; it guards only memory work.

Only the flusher writes to the socket after the handshake, so TLS records leave in order.
"""

from __future__ import annotations

import ssl
import threading
import time

from chatd.core.outbox import ChannelError

#: The default bound; the listener passes ``handshake_timeout`` from the config.
HANDSHAKE_SECONDS = 5.0


class TlsError(ChannelError):
    """The TLS handshake or a record failed; the message is short, for the log. A
    ChannelError, which is what the session (core) catches from ``decrypt``."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``cert``/``key`` (raises OSError or ssl.SSLError)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class TlsChannel:
    __slots__ = ("_in", "_out", "_obj", "_lock")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._lock = threading.Lock()

    def handshake(self, sock, timeout: float = HANDSHAKE_SECONDS) -> None:
        """Run the server handshake on the connection's own thread, before anyone else writes.

        Every wait counts against ``timeout``, sending included: a peer that stops reading
        (a zero TCP window) must not hold the thread, and its handshake slot, past it.
        """
        deadline = time.monotonic() + timeout
        try:
            while not self._handshake_step(sock, deadline):
                _within(sock, deadline)
                data = sock.recv(65536)
                if not data:
                    raise TlsError("connection closed during handshake")
                with self._lock:
                    self._in.write(data)
        except TimeoutError:
            raise TlsError("handshake timed out") from None
        finally:
            sock.settimeout(None)  # blocking again: the session reads it so from now on

    def _handshake_step(self, sock, deadline: float) -> bool:
        """One ``do_handshake``, sending what it produced; True once the handshake is done."""
        with self._lock:
            try:
                self._obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                raise TlsError(exc.reason or str(exc)) from None
            pending = self._out.read()
        if pending:
            _within(sock, deadline)
            sock.sendall(pending)
        return done

    def decrypt(self, raw: bytes) -> tuple[bytes | None, bool]:
        """Feed received bytes; returns (plaintext, whether TLS has output to send).

        Plaintext is ``None`` when the peer closed the TLS session (close_notify).
        """
        chunks = []
        with self._lock:
            self._in.write(raw)
            try:
                while True:
                    chunks.append(self._obj.read(65536))
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return None, bool(self._out.pending)
            except ssl.SSLError as exc:
                raise TlsError(exc.reason or str(exc)) from None
            return b"".join(chunks), bool(self._out.pending)

    def encrypt(self, plaintext: bytes) -> bytes:
        """Plaintext to TLS records (plus anything TLS itself has queued), for the flusher."""
        with self._lock:
            if plaintext:
                self._obj.write(plaintext)
            return self._out.read()


def _within(sock, deadline: float) -> None:
    """Bound the next socket call by what is left until ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TlsError("handshake timed out")
    sock.settimeout(remaining)
