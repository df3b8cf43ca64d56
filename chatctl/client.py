"""AdminClient: talk to a running chatd over its admin socket (docs/protocol.md §6). Never prints.

The library under chatctl's CLI, usable from scripts and tests too::

    with AdminClient("/run/chatd/admin.sock") as admin:
        for client in admin.request("list"):
            ...
        admin.request("kick", target="alice", reason="spam")

:meth:`AdminClient.request` returns the reply's ``result`` or raises :class:`AdminError` (the
daemon answered and refused: ``code`` is one of ``adminproto.ERRORS``). Whenever the daemon
cannot be talked to at all it raises :class:`Unreachable` instead, whose ``kind`` says why, so
the CLI can map the two to different exit statuses and messages. Framing and error codes come
from :mod:`chatd.adminproto` (stdlib only), shared with the daemon.

Runs in the caller's thread; one AdminClient is one connection and is not thread-safe.
"""

from __future__ import annotations

import errno
import json
import socket
import time

from chatd.admin.protocol import AdminError, MalformedReply, parse_reply, request_line

__all__ = ["AdminClient", "AdminError", "Unreachable", "DEFAULT_TIMEOUT"]

#: Seconds to wait for the connection and for each reply.
DEFAULT_TIMEOUT = 10.0
#: A reply longer than this is treated as garbage rather than buffered forever. `list` with
#: 10,000 clients is a few MB, so this is generous.
MAX_REPLY_BYTES = 64 * 1024 * 1024


class Unreachable(Exception):
    """The daemon could not be talked to. ``kind`` is one of :attr:`KINDS`:

    ``no_socket``   nothing at ``path`` (chatd not running, or another socket path)
    ``refused``     a socket file nobody listens on (stale: chatd died without removing it)
    ``permission``  the file mode, or the daemon's SO_PEERCRED check, turned us away
    ``busy``        the daemon has no admin connection to spare (try again later)
    ``error``       anything else: timeout, a malformed reply, the connection dropped mid-way
    ``lost``        a watch's connection ended without a final event (chatd died)

    ``detail`` is a short human description (for ``error`` it is the only one).
    """

    KINDS = ("no_socket", "refused", "permission", "busy", "error", "lost")

    def __init__(self, kind: str, path: str, detail: str | None = None) -> None:
        assert kind in self.KINDS, kind
        self.kind = kind
        self.path = path
        self.detail = detail or kind.replace("_", " ")
        super().__init__(f"{path}: {self.detail}")


class AdminClient:
    """One connection to chatd's admin socket; several requests may share it.

    The caller uses :meth:`request` (connecting on first use, or call :meth:`connect` to find
    out early whether the daemon is there), then :meth:`close`, or uses it as a context
    manager. ``timeout`` bounds the connect and each request's wait for its reply.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._next_id = 1
        self._answered = 0  # replies read on this connection

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException as exc:
            sock.close()
            raise self._connect_error(exc) from None
        self._sock = sock
        self._buf.clear()
        self._answered = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, cmd: str, **args):
        """Send one request and return the reply's ``result``.

        Raises :class:`AdminError` when the daemon refuses (no such client, invalid address,
        …) and :class:`Unreachable` when it cannot be asked. After an Unreachable the
        connection is closed; the next request reconnects.
        """
        self.connect()
        request_id = self._next_id
        self._next_id += 1
        try:
            line = self._exchange(request_line(cmd, args, request_id))
        except Unreachable:
            self.close()
            raise
        self._answered += 1
        try:
            return parse_reply(line)
        except MalformedReply as err:
            self.close()
            raise Unreachable("error", self.path, err.message) from None
        except AdminError as err:
            if err.code not in ("permission_denied", "busy"):
                raise
            code = err.code
        # The daemon says so, then hangs up: to the user this is the same wall as a file mode
        # that stops connect() (or a full listen queue), and it gets the same advice.
        self.close()
        if code == "busy":
            raise Unreachable("busy", self.path, "too many admin connections")
        raise Unreachable("permission", self.path, "permission denied")

    def watch(self, room: str | None = None):
        """Subscribe (docs/protocol.md §11) and yield each event, a dict, as chatd sends it, up
        to and including the final one (its line says ``"final": true``); then return. Raises
        AdminError for a refusal, Unreachable when chatd cannot be asked, and Unreachable
        ``lost`` when the stream ends without a final event. Waits for events without a
        timeout: the caller ends it (Ctrl-C) or chatd does."""
        self.request("watch", **({"room": room} if room is not None else {}))
        self._sock.settimeout(None)
        while True:
            line = self._stream_line()
            try:
                envelope = json.loads(line)
                event = envelope["event"]
                if not isinstance(event, dict):
                    raise TypeError
            except (ValueError, RecursionError, TypeError, KeyError):
                self.close()
                raise Unreachable("error", self.path, "the daemon sent a malformed event") from None
            yield event
            if envelope.get("final") is True:
                self.close()
                return

    # -- internals -----------------------------------------------------------------------------

    def _stream_line(self) -> bytes:
        """The next line of a watch, however long it takes."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > MAX_REPLY_BYTES:
                raise Unreachable("error", self.path, "the daemon sent a malformed event")
            try:
                chunk = self._sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            except OSError as exc:
                raise Unreachable("error", self.path, _strerror(exc)) from None
            if not chunk:
                self.close()
                raise Unreachable("lost", self.path, "connection lost without a shutdown event "
                                  "(did chatd die?)")
            self._buf += chunk

    def _exchange(self, data: bytes) -> bytes:
        """Send ``data``, return the next reply line (without its LF)."""
        deadline = time.monotonic() + self.timeout
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            # The daemon hung up before reading us (its SO_PEERCRED check does that). What it
            # said before closing is still readable; the read below reports it.
            pass
        except TimeoutError:
            raise Unreachable("error", self.path, f"no reply within {self.timeout:g}s") from None
        except OSError as exc:
            raise Unreachable("error", self.path, _strerror(exc)) from None
        scanned = 0  # a long reply (list of 10,000 clients) arrives in many chunks: scan each once
        while True:
            end = self._buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > MAX_REPLY_BYTES:
                raise Unreachable("error", self.path, "the daemon sent a malformed reply")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unreachable("error", self.path, f"no reply within {self.timeout:g}s")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue  # the deadline check above reports it
            except ConnectionResetError:
                chunk = b""
            except OSError as exc:
                raise Unreachable("error", self.path, _strerror(exc)) from None
            if not chunk:
                raise self._closed_error()
            scanned = len(self._buf)
            self._buf += chunk

    def _closed_error(self) -> Unreachable:
        if self._answered == 0:
            # Closed before answering anything: the daemon refused us at accept (SO_PEERCRED)
            # without managing to say so.
            return Unreachable("permission", self.path, "permission denied")
        return Unreachable("error", self.path, "the daemon closed the connection")

    def _connect_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            return Unreachable("no_socket", self.path, "no socket")
        if isinstance(exc, ConnectionRefusedError):
            return Unreachable("refused", self.path, "connection refused")
        if isinstance(exc, PermissionError):
            return Unreachable("permission", self.path, "permission denied")
        if isinstance(exc, socket.timeout):
            return Unreachable("error", self.path, f"no reply within {self.timeout:g}s")
        if isinstance(exc, OSError):
            return Unreachable("error", self.path, _strerror(exc))
        return exc  # KeyboardInterrupt and the like pass through unchanged


def _strerror(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):  # AF_UNIX: 108 bytes max
        return "socket path too long"
    return (exc.strerror or str(exc)).lower()
