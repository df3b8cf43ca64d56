"""The upgrade handover's wire: messages and descriptors between the old and the new chatd,
as a chatd from before issue 23 §4 speaks it: it starts its successor as a child and hands
over on a socket pair. This chatd upgrades in place instead (reexec.py) and speaks only the new
process's side (upgrade.Takeover), for the one upgrade from such a chatd to this one. The
state it carries is state.py's, shared by every way of handing over.

The two processes talk over one Unix stream socket pair made by the old process (the new one
inherits its end; ``CHATD_UPGRADE_FD`` names it). A message is a 4-byte big-endian length and
a JSON object with a ``type``; descriptors travel after the message that counts them, in
batches of :data:`FDS_PER_BATCH` (SCM_RIGHTS carries at most 253 per message), each batch on
one marker byte so that a reader that takes one byte at a time gets each batch whole.

The conversation (upgrade.py runs both sides)::

    new -> old  {"type": "hello", "pid", "version", "state_versions"}   config read, modules loaded
    old -> new  {"type": "state", "state": {...}, "fds": N}  + N descriptors
    new -> old  {"type": "ready"}   or {"type": "error", "reason"}
    old -> new  {"type": "commit"}  or {"type": "abort"}
    new -> old  {"type": "serving"}  every thread started; then the new one closes its end,
                                     and the old process exits at that EOF

The state is versioned (state.STATE_VERSION): the old process sends it only if the new one
said in ``hello`` that it reads that version, so an older chatd never misreads a newer state;
the upgrade fails instead and the old process serves on. Bytes inside the state (unread
input, unsent output) are base64 strings (state.pack_bytes).
"""

from __future__ import annotations

import json
import socket
import struct
import time

FDS_PER_BATCH = 250
MAX_MESSAGE_BYTES = 1 << 30
ENV_FD = "CHATD_UPGRADE_FD"

_LENGTH = struct.Struct(">I")


class InheritedState:
    """A takeover with no partner process to talk to (the fd store's, the exec's): the state
    and its descriptors are already here. Subclasses fill ``state`` and ``fds`` in
    ``receive()``; a socket is made from a descriptor by its index in ``fds``."""

    def __init__(self) -> None:
        self.state: dict | None = None
        self.fds: list[int] = []

    def sock(self, index: int) -> socket.socket:
        return socket.socket(fileno=self.fds[index])

    def ready(self) -> None:
        """Nobody to tell, and nobody to roll back to."""


class HandoverError(Exception):
    """The other side went away, timed out or said something we cannot use (one line)."""


class Channel:
    """One end of the handover socket pair. Not thread-safe: one thread per side uses it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def close(self) -> None:
        self.sock.close()

    def send(self, message: dict, fds: list[int] = ()) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        self.sock.sendall(_LENGTH.pack(len(data)) + data)
        for start in range(0, len(fds), FDS_PER_BATCH):
            socket.send_fds(self.sock, [b"F"], fds[start:start + FDS_PER_BATCH])

    def receive(self, timeout: float | None, expect: tuple[str, ...]) -> dict:
        """The next message, which must be of a type in ``expect`` (or ``error``)."""
        self.sock.settimeout(timeout)
        try:
            (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
            if length > MAX_MESSAGE_BYTES:
                raise HandoverError(f"a handover message of {length} bytes")
            message = json.loads(self._exactly(length))
        except TimeoutError:
            raise HandoverError(f"no answer within {timeout:g} s") from None
        except (OSError, ValueError) as exc:
            raise HandoverError(f"the handover failed: {exc}") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "error" and "error" not in expect:
            raise HandoverError(str(message.get("reason", "unknown error")))
        if kind not in expect:
            raise HandoverError(f"unexpected handover message {kind!r}")
        return message

    def wait_closed(self, timeout: float) -> None:
        """Until the other end has closed its end (EOF), ``timeout`` seconds at most."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                if not self.sock.recv(4096):
                    return
        except TimeoutError:
            raise HandoverError(f"still open after {timeout:g} s") from None
        except OSError as exc:
            raise HandoverError(f"the handover failed: {exc}") from None

    def receive_fds(self, count: int, timeout: float | None) -> list[int]:
        self.sock.settimeout(timeout)
        fds: list[int] = []
        try:
            while len(fds) < count:
                data, batch, _, _ = socket.recv_fds(self.sock, 1, FDS_PER_BATCH)
                if not data:
                    raise HandoverError("the other chatd went away while sending descriptors")
                fds.extend(batch)
        except TimeoutError:
            raise HandoverError(f"descriptors did not arrive within {timeout:g} s") from None
        except OSError as exc:
            raise HandoverError(f"the handover failed: {exc}") from None
        return fds

    def _exactly(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise HandoverError("the other chatd went away")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
