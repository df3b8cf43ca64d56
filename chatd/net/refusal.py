"""A refused connection's last words arrive (SPEC §3): the refusal line is sent, our side is
shut, and what the client had already sent is read and dropped before the socket is closed.

Why: closing a socket that still holds unread input makes the kernel answer with a reset, and
a reset can destroy the refusal line before the client has read it (`printf 'hi\\n' | nc` to a
full server got nothing in 2 of 20 tries). So a refused socket is handed to :class:`Lingerer`,
one thread with an epoll that reads each until the client's EOF, DRAIN_BYTES or LINGER_SECONDS,
whichever comes first, then closes it. Bounded: at most MAX_LINGERING sockets at once (a
flood of refusals past that is closed at once, as before); the thread exists only while it has
sockets to drain, so an idle chatd has no thread for it.

Threads: :meth:`Lingerer.hand` on the accept thread (no I/O but a non-blocking wake-up);
the lingering thread owns the sockets handed to it. ``_lock`` guards ``_handed``, ``_count``
and ``_running``.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

#: How long a refused client may take to finish sending and close its side.
LINGER_SECONDS = 2.0
#: How much of a refused client's input is read (and dropped) before we close anyway.
DRAIN_BYTES = 64 * 1024
#: Refused sockets draining at once; more are closed at once.
MAX_LINGERING = 256


class Lingerer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handed: list[socket.socket] = []  # sockets not yet taken by the thread
        self._count = 0  # sockets handed and not yet closed
        self._running = False
        self._wake: int | None = None  # an eventfd, made with the first refusal


    def hand(self, sock: socket.socket) -> None:
        """``sock`` has had its refusal sent and its write side shut: drain it, then close."""
        with self._lock:
            if self._count >= MAX_LINGERING:
                sock.close()
                return
            self._count += 1
            self._handed.append(sock)
            if self._wake is None:
                self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            start, self._running = not self._running, True
        if start:
            threading.Thread(target=self._run, name="refusal-linger", daemon=True).start()
        else:
            os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        poller = select.epoll()
        poller.register(self._wake, select.EPOLLIN)
        open_: dict[int, tuple[socket.socket, float, list]] = {}  # fd -> (sock, deadline, [read])
        try:
            while True:
                with self._lock:
                    handed, self._handed = self._handed, []
                    if not handed and not open_:
                        self._running = False
                        return
                for sock in handed:
                    poller.register(sock.fileno(), select.EPOLLIN)
                    open_[sock.fileno()] = (sock, time.monotonic() + LINGER_SECONDS, [0])
                now = time.monotonic()
                timeout = max(0.0, min(deadline for _, deadline, _ in open_.values()) - now) \
                    if open_ else None
                for fd, _ in poller.poll(timeout):
                    if fd == self._wake:
                        os.eventfd_read(self._wake)
                    elif fd in open_ and self._drained(*open_[fd]):
                        self._close(poller, open_, fd)
                now = time.monotonic()
                for fd in [fd for fd, (_, deadline, _) in open_.items() if deadline <= now]:
                    self._close(poller, open_, fd)
        finally:
            poller.close()

    @staticmethod
    def _drained(sock: socket.socket, _deadline: float, read: list) -> bool:
        """Read what is there; True once the client is done (EOF, an error, enough read)."""
        try:
            data = sock.recv(16384, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        read[0] += len(data)
        return not data or read[0] >= DRAIN_BYTES

    def _close(self, poller, open_: dict, fd: int) -> None:
        sock = open_.pop(fd)[0]
        try:
            poller.unregister(fd)
        except OSError:
            pass
        sock.close()
        with self._lock:
            self._count -= 1
