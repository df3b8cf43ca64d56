"""An accept thread for one listening socket (the TCP listener and the admin socket use it).

It survives whatever the network and the kernel throw at ``accept()``: a peer that resets
before it is accepted (ECONNABORTED and friends concern one peer only: go on), and running out
of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM: log ``accept_failed``, back off
briefly so a full process table does not become a busy loop, go on). Any other error means
the socket itself is unusable (EINVAL, EBADF): log it and end the thread rather than spin.

``stop()`` wakes a blocked ``accept()``. A socket we bound is shut down, which Linux turns into
an error in the accept thread. A socket systemd passed us (socket activation) must not be: the
shutdown would also stop systemd's copy from listening. For that one ``wake`` connects to it,
and the accept thread sees the stop flag when that connection arrives.

Each accepted connection goes to ``handle(conn, addr)`` on the accept thread; an exception
there closes that connection and is logged, and the loop goes on.

``pause()`` ends the thread but leaves the socket listening: an upgrade (upgrade.py) hands it
to the next process, and connections that arrive meanwhile wait in the kernel's backlog for
it. The thread waits in ``poll()`` on the socket and an eventfd that ``pause()`` writes, so
nothing is ever done to the socket itself; a connection accepted just before is handled as
usual. ``resume()`` (the upgrade failed) starts a new thread on the same socket.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading

import structlog

log = structlog.get_logger("chatd.acceptor")

RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
FATAL_ERRORS = {errno.EINVAL, errno.EBADF, errno.ENOTSOCK, errno.EOPNOTSUPP}
BACKOFF_SECONDS = 0.1


class Acceptor:
    def __init__(self, sock: socket.socket, name: str, handle, wake=None) -> None:
        """``wake``: None for a socket we own, else a callable that connects to it."""
        self.sock = sock
        self._name = name
        self._handle = handle
        self._wake = wake
        self._stopping = threading.Event()
        self._pause_fd = -1
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self._pause_fd < 0:  # here, not in __init__: --daemon closes descriptors between
            self._pause_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread.start()

    def pause(self) -> None:
        """Stop accepting, leave the socket listening (see the module docstring)."""
        os.eventfd_write(self._pause_fd, 1)
        self._thread.join(5.0)

    def resume(self) -> None:
        os.eventfd_read(self._pause_fd)
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wait for the thread, close the socket (also after a failed start)."""
        self._stopping.set()
        try:
            if self._wake is None:
                self.sock.shutdown(socket.SHUT_RDWR)
            elif self._thread.is_alive():
                self._wake()
        except OSError:
            pass
        if self._thread.ident is not None:
            self._thread.join(5.0)
        self.sock.close()
        if self._pause_fd >= 0:
            os.close(self._pause_fd)
            self._pause_fd = -1

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._pause_fd, select.POLLIN)
        while not self._stopping.is_set():
            if any(fd == self._pause_fd for fd, _ in poller.poll()):
                return
            try:
                conn, addr = self.sock.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno in RESOURCE_ERRORS:
                    log.error("accept_failed", socket=self._name, error=exc.strerror, errno=exc.errno)
                    self._stopping.wait(BACKOFF_SECONDS)
                elif exc.errno in FATAL_ERRORS:
                    log.error("listener_failed", socket=self._name, error=exc.strerror, errno=exc.errno)
                    return
                continue
            if self._stopping.is_set():  # the wake-up connection, or one racing the stop
                conn.close()
                return
            try:
                self._handle(conn, addr)
            except Exception:
                log.exception("connection_setup_failed", socket=self._name)
                conn.close()
