"""The gate every session thread passes before it reads: how an upgrade stops all reading.

An upgrade (upgrade.py) hands every connection to a new process, and nothing a client sends
may be read by both processes or by neither. So before the state is taken, every session
thread must be *between* two reads, with what it has read so far in its own state. A thread
blocked in ``recv()`` could not be stopped without harming the socket (a shutdown would reach
the new process too: it is the same socket), so sessions do not block in ``recv()``: they
wait in ``poll()`` on their socket, inside :meth:`Gate.polling`, and read only after it.

A session waiting in ``poll()`` is at such a point already: it has not read what is pending
and it checks the gate before it does. So closing the gate wakes nobody. The upgrade counts
the sessions in ``poll()`` (``_polling``) and those that came out of it, or out of a pause,
or were about to take the next buffered line, and found the gate closed (:meth:`park`: they
wait until it opens again, after an upgrade that failed, or forever: this process exits under
them). The check before each line matters: a session with lines and tokens in hand may not
reach a read for seconds (session.py ``_drain_lines``). :meth:`wait_parked` returns once every
live session is one or the other; no thread changes their state while the gate is closed.
(The first design woke every session through an eventfd to park it: 2.6 s at 5,000 clients,
5,000 threads fighting for the GIL at once.)

``_lock`` guards ``closed``, ``_polling``, ``_parked`` and ``_awaited``; a session holds it
only to register or unregister, never while it polls. Two conditions share it so that nobody
is woken for nothing: parked sessions wait on ``_opened`` (notified when the gate opens), the
upgrade on ``_arrived`` (notified when the last awaited session stops, or one ends).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class Gate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = threading.Condition(self._lock)
        self._arrived = threading.Condition(self._lock)
        self.closed = False  # read without the lock by sessions, as a hint; park() decides
        self._polling: dict = {}  # client id -> Session, waiting in poll() right now
        self._parked: dict = {}  # client id -> Session
        self._awaited = 0  # sessions wait_parked() waits for (0: nobody waits)

    def close(self) -> None:
        """From now on no session reads until :meth:`open` (see the module docstring)."""
        with self._lock:
            self.closed = True

    def open(self) -> None:
        """Let the parked sessions go on (an upgrade that failed)."""
        with self._lock:
            self.closed = False
            self._opened.notify_all()

    @contextmanager
    def polling(self, session):
        """Around a session's ``poll()``: it counts as stopped while inside; on the way out
        it parks if the gate closed meanwhile."""
        key = session.client.id
        with self._lock:
            self._polling[key] = session
        try:
            yield
        finally:
            with self._lock:
                del self._polling[key]
                if self.closed:
                    self._park(key, session)

    def park(self, session) -> None:
        """Called by a session thread that saw the gate closed; returns once it opens."""
        with self._lock:
            if self.closed:
                self._park(session.client.id, session)

    def _park(self, key, session) -> None:
        self._parked[key] = session
        self._stopped()
        self._opened.wait_for(lambda: not self.closed)
        del self._parked[key]

    def _stopped(self) -> None:
        if len(self._parked) + len(self._polling) >= self._awaited:  # the last wakes it
            self._arrived.notify()

    def changed(self) -> None:
        """A session ended (the listener says so): :meth:`wait_parked` counts again."""
        with self._lock:
            self._arrived.notify()

    def wait_parked(self, count, timeout: float) -> list | None:
        """Wait until ``count()`` sessions are stopped (parked or in poll); returns them (by
        client id), or None if they are not all stopped within ``timeout``."""
        def all_stopped() -> bool:
            self._awaited = count()
            return len(self._parked) + len(self._polling) >= self._awaited

        with self._lock:
            done = self._arrived.wait_for(all_stopped, timeout)
            self._awaited = 0
            if not done:
                return None
            stopped = {**self._polling, **self._parked}
            return [stopped[key] for key in sorted(stopped)]
