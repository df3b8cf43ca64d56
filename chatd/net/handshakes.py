"""TLS handshakes before a connection is a client (listener.py): the slots they take, in all
and per address, and the log lines about their trouble, throttled so that a flood of
handshakes cannot become a flood of log lines.
"""

from __future__ import annotations

import threading
import time

import structlog

log = structlog.get_logger("chatd.server")

#: At most one line per this many seconds for each kind of handshake trouble (see Throttled).
THROTTLE_SECONDS = 10.0
HANDSHAKES_FULL = "too many handshakes"
HANDSHAKES_FROM_IP = "too many handshakes from your address"


class Throttled:
    """A log event that a flood cannot turn into a flood of log lines.

    The first occurrence after a quiet ``interval`` is logged at once; later ones are only
    counted, and go out as one line with the next occurrence after the interval, or with
    :meth:`flush`. ``count`` in a line is how many occurrences it stands for (itself
    included); the other fields are the latest occurrence's. Any thread may call these; the
    lock guards the counter only, the line is logged outside it.
    """

    def __init__(self, event: str, level: str, interval: float = THROTTLE_SECONDS) -> None:
        self._event = event
        self._level = level
        self._interval = interval
        self._lock = threading.Lock()
        self._count = 0
        self._next = 0.0
        self._fields: dict = {}

    def note(self, **fields) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += 1
            self._fields = fields
            if now < self._next:
                return
        self.flush()

    def flush(self, due_only: bool = False) -> None:
        """Log what was counted (only once the interval is over, with ``due_only``)."""
        now = time.monotonic()
        with self._lock:
            if not self._count or (due_only and now < self._next):
                return
            count, fields = self._count, self._fields
            self._count, self._next = 0, now + self._interval
        getattr(log, self._level)(self._event, count=count, **fields)


class HandshakeSlots:
    """TLS connections whose handshake is under way, in all and per address.

    The accept thread takes a slot, the connection's own thread gives it back; ``stop()``
    closes the set and gets the connections still in it, to end them. ``_lock`` guards the
    maps and ``closed`` and is never held while doing anything else.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict = {}  # client id -> Client
        self._per_ip: dict = {}  # ip -> pending handshakes from it
        self.closed = False

    def take(self, client, total: int, per_ip: int) -> str | None:
        """A slot for ``client``, or why there is none."""
        with self._lock:
            if len(self._pending) >= total:
                return HANDSHAKES_FULL
            count = self._per_ip.get(client.ip, 0)
            if count >= per_ip:
                return HANDSHAKES_FROM_IP
            self._pending[client.id] = client
            self._per_ip[client.ip] = count + 1
        return None

    def give_back(self, client) -> bool:
        """Free ``client``'s slot; False once the listener is stopping."""
        with self._lock:
            if self._pending.pop(client.id, None) is not None:
                left = self._per_ip[client.ip] - 1
                if left:
                    self._per_ip[client.ip] = left
                else:
                    del self._per_ip[client.ip]
            return not self.closed

    def close(self) -> list:
        """No more handshakes; returns the clients still handshaking."""
        with self._lock:
            self.closed = True
            return list(self._pending.values())

    def reopen(self) -> None:
        with self._lock:
            self.closed = False
