"""Ways to hurt chatd's connections from outside, without touching chatd's code.

- :func:`vanish` closes a TCP socket without sending FIN or RST (TCP_REPAIR), as a peer that
  lost power would (:func:`support.sockets.rst_close` closes with an RST).
- :func:`in_flight` lists connections with unacknowledged data (wait until it is empty before
  :func:`vanish`); :func:`ss_established` shows their timers (keepalive).
- :func:`server_socket` borrows chatd's end of a client connection (pidfd_getfd) so a test can
  read its socket options (keepalive) or shorten its keepalive timers.
- :class:`Swarm` drives hundreds of non-blocking clients from one thread.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.geteuid() == 0
TCP_REPAIR = 19  # linux/tcp.h; not exported by Python's socket module
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (added in 5.6)


def can_vanish() -> bool:
    """Whether :func:`vanish` works here (TCP_REPAIR needs CAP_NET_ADMIN)."""
    probe = socket.socket()
    try:
        probe.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def vanish(sock: socket.socket) -> None:
    """Close ``sock`` sending nothing at all: no FIN, no RST (TCP_REPAIR mode).

    To chatd this is a half-open connection, as left by a peer that lost power or network:
    nothing arrives, ever. Only when chatd sends does our kernel answer with an RST (it no
    longer knows the connection), as a rebooted peer's kernel would.
    """
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    sock.close()


def server_socket(pid: int, client: socket.socket) -> socket.socket:
    """A duplicate of chatd's end of ``client``'s connection (pidfd_getfd; needs ptrace rights).

    The duplicate shares the open file description, so socket options read or set on it are
    chatd's own. Close it when done (chatd's descriptor stays open).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    want = client.getsockname()
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                pytest.skip(f"pidfd_getfd: {os.strerror(err)}")
            sock = socket.socket(fileno=fd)
            try:
                if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET \
                        and sock.getpeername() == want:
                    return sock
            except OSError:
                pass
            sock.detach()
            os.close(fd)
    finally:
        os.close(pidfd)
    raise AssertionError(f"chatd (pid {pid}) has no socket connected to {want}")


def in_flight(port: int) -> list[str]:
    """The connections to or from ``port`` with data not yet acknowledged, either way (ss -i).

    Before :func:`vanish`, wait until this is empty: a segment still in flight (or a delayed
    ACK) would reach the vanished socket and draw an RST, so chatd would learn of the vanish
    at once, and the half-open connection would not be silent.
    """
    out = subprocess.run(["ss", "-tnoiH", "state", "established",
                          f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    busy, head = [], ""
    for line in out.splitlines():
        if line and not line[0].isspace():
            head = line
            continue
        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
        # bytes_sent counts retransmissions too; bytes_acked counts the connecting side's SYN
        sent = int(fields.get("bytes_sent", 0)) - int(fields.get("bytes_retrans", 0))
        if "unacked" in fields or int(fields.get("bytes_acked", 0)) < sent:
            busy.append(f"{head.strip()} | {line.strip()}")
    return busy


def ss_established(port: int) -> list[str]:
    """``ss -tno`` lines (with timers) of the established connections on local port ``port``."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line for line in out.splitlines() if line.strip() and f":{port} " in line]


class Swarm:
    """Many non-blocking clients driven by one thread: each sends its lines a few bytes at a
    time (so most of the time it is mid-line) at a steady pace, and keeps whatever arrives,
    until chatd closes it. ``data[i]`` is what client i received; ``ended[i]`` how it ended."""

    def __init__(self, socks: list[socket.socket], lines_per_second: float = 20.0,
                 piece: int = 7) -> None:
        self.socks = socks
        self.data = [b""] * len(socks)
        self.ended: list[str | None] = [None] * len(socks)
        self.sent = [0] * len(socks)
        self._piece = piece
        self._interval = 1.0 / (lines_per_second * 12 / piece)  # ~12-byte lines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for sock in self.socks:
            sock.setblocking(False)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        pending = {}
        for i, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, i)
            pending[i] = b""
        next_send = time.monotonic()
        while pending and not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                next_send = now + self._interval
                for i in list(pending):
                    if not pending[i]:
                        pending[i] = f"line {self.sent[i]}\n".encode()
                        self.sent[i] += 1
                    try:
                        n = self.socks[i].send(pending[i][: self._piece])
                        pending[i] = pending[i][n:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        pass  # reading will tell how it ended
            for key, _ in selector.select(max(0.0, next_send - time.monotonic())):
                i = key.data
                try:
                    chunk = self.socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    chunk, self.ended[i] = b"", f"error {exc.errno}"
                if chunk:
                    self.data[i] += chunk
                    continue
                self.ended[i] = self.ended[i] or "eof"
                selector.unregister(self.socks[i])
                del pending[i]
        selector.close()
