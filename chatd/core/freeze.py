"""An upgrade's hold on all output: the flusher stops between two writes and hands over what
it has not sent (upgrade.py sends it from the next process).

A mixin of :class:`~chatd.core.flusher.Flusher`, kept apart because only an upgrade uses it;
it works on the flusher's queue, lock, wake-up eventfd, epoll and writers.
"""

from __future__ import annotations

import os
import select
import threading


class Freezable:
    """``freeze``/``thaw`` for any thread; ``_freeze``/``_thaw`` run on the flusher thread."""

    def freeze(self, timeout: float) -> dict | None:
        """Stop all output once everything queued before now has been done, and return each
        connection's output not yet sent (outbox -> bytes); None if the flusher did not get
        there within ``timeout``. For an upgrade (upgrade.py): what is returned is sent by the
        next process, so this one must not send a byte more until :meth:`thaw`."""
        request = _FreezeRequest()
        self._submit((self._freeze, request))
        if request.done.wait(timeout):
            return request.backlogs
        with self._lock:
            request.cancelled = True
        return request.backlogs if request.done.is_set() else None

    def thaw(self) -> None:
        """Go on after :meth:`freeze` (the upgrade failed)."""
        with self._lock:
            self._frozen = False
            self._queue.insert(0, (self._thaw,))
            wake = self._sleeping
            self._sleeping = False
        if wake:
            os.eventfd_write(self._wake_fd, 1)

    def _freeze(self, request: _FreezeRequest) -> None:
        with self._lock:
            if request.cancelled:  # freeze() gave up waiting for us
                return
            self._frozen = True
        for fd in self._writers:
            self._epoll.modify(fd, 0)  # level-triggered EPOLLOUT would spin while frozen
        for outbox in self._writers.values():
            request.backlogs[outbox] = b"".join(outbox.backlog)
        request.done.set()

    def _thaw(self) -> None:
        for fd in self._writers:
            self._epoll.modify(fd, select.EPOLLOUT)


class _FreezeRequest:
    """One freeze(): the flusher fills ``backlogs`` and sets ``done``, unless ``cancelled``
    (set under Flusher._lock by a freeze() that stopped waiting) says nobody waits any more."""

    __slots__ = ("backlogs", "done", "cancelled")

    def __init__(self) -> None:
        self.backlogs: dict = {}
        self.done = threading.Event()
        self.cancelled = False
