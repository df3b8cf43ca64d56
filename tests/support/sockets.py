"""Socket helpers every kind of test needs: an abortive close, and reading up to a marker."""

from __future__ import annotations

import socket
import struct
import time


def rst_close(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed peer's kernel does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def read_until(sock, marker: bytes, timeout: float = 5.0) -> bytes:
    """Read raw bytes from ``sock`` (a plain or TLS socket) until ``marker`` has arrived;
    returns all of them. Fails if the peer closes first or the deadline passes."""
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} within {timeout}s; got {data!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}; got {data!r}"
        data += chunk
    return data

