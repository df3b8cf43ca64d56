"""The gate every session thread passes before it reads: how an upgrade stops all reading.

An upgrade (upgrade.py) hands every connection to a new process, and nothing a client sends
may be read by both processes or by neither. So before the state is taken, every session
thread must stop *between* two reads, with what it has read so far in its own state. A
thread blocked in ``recv()`` cannot be woken without harming the socket (a shutdown would
reach the new process too: it is the same socket), so sessions do not block in ``recv()``:
they wait in ``poll()`` on their socket and on :attr:`Gate.fd`, an eventfd that
:meth:`close` makes readable for all of them at once (it is never read until :meth:`open`).

A session that sees the gate closed calls :meth:`park`: it registers itself and waits until
the gate opens again (the upgrade failed: it goes on as if nothing happened) or forever (the
upgrade succeeded: this process exits under it). The upgrade waits in :meth:`wait_parked`
until every live session is parked, then reads their state, which no thread changes while
they wait.

``_cond`` guards ``closed`` and ``_parked``; a parked session holds no other lock.
"""

from __future__ import annotations

import os
import threading


class Gate:
    def __init__(self) -> None:
        self.fd = -1  # made by start(): --daemon closes descriptors before that
        self._cond = threading.Condition()
        self.closed = False  # read without the lock by sessions, as a hint; park() decides
        self._parked: dict = {}  # client id -> Session

    def start(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def close(self) -> None:
        """Ask every session to park at its next safe point."""
        with self._cond:
            self.closed = True
        os.eventfd_write(self.fd, 1)

    def open(self) -> None:
        """Let the parked sessions go on (an upgrade that failed)."""
        with self._cond:
            self.closed = False
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass
            self._cond.notify_all()

    def park(self, session) -> None:
        """Called by a session thread that saw the gate closed; returns once it opens."""
        with self._cond:
            if not self.closed:
                return
            self._parked[session.client.id] = session
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self.closed)
            del self._parked[session.client.id]

    def changed(self) -> None:
        """A session ended (the listener says so): :meth:`wait_parked` counts again."""
        with self._cond:
            self._cond.notify_all()

    def wait_parked(self, count, timeout: float) -> list | None:
        """Wait until ``count()`` sessions are parked; returns them (by client id), or None
        if they are not all parked within ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._parked) >= count(), timeout):
                return None
            return [self._parked[key] for key in sorted(self._parked)]
