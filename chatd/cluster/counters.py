"""Counters shared by the nodes: guest numbers and client-id blocks (``INCR``), and the
release of a nick claim (a script: only if still ours). Used by the bus (claims, the
listeners' ids) and by leases.py (a reasserting node's new guest nicks)."""

from __future__ import annotations

import threading
import time

import structlog

from chatd.cluster.keys import GUESTS, ID_BLOCK, ID_BLOCKS, NICKS
from chatd.cluster.link import scrub
from chatd.text import fold

log = structlog.get_logger("chatd.cluster")

#: Guest numbers above this would make a nick longer than the name rule allows: repaired.
MAX_GUEST = 10 ** 15
MAX_ID_BLOCK = 10 ** 11


class Counters:
    """Guest numbers and client-id blocks (``INCR``), and nick releases. A counter that is not
    a number Redis can increment, or has grown past what a nick or an id may hold, was not
    written by a node: it is reset with one warning instead of failing every connect."""

    def __init__(self, link) -> None:
        self.link = link

    def guest_number(self) -> int:
        return self._incr(GUESTS, MAX_GUEST, lambda: 0)

    def id_block(self) -> int:
        return self._incr(ID_BLOCKS, MAX_ID_BLOCK, lambda: int(time.time()))

    def _incr(self, key: str, limit: int, reset) -> int:
        import redis

        redis_ = self.link.redis
        try:
            value = int(redis_.incr(key))
            if 0 < value <= limit:
                return value
            problem = f"{value} is out of range"
        except redis.ResponseError as exc:  # not an integer, or it would overflow
            problem = str(exc)
        self.link.rejected("counter", problem, key=key)
        redis_.set(key, reset())
        return int(redis_.incr(key))

    def release(self, nick: str, owner: str) -> None:
        link = self.link
        try:
            link.scripts["release"](keys=[NICKS], args=[
                fold(nick), link.seal.seal(f"{NICKS}/{fold(nick)}", owner)])
        except Exception as exc:
            log.warning("cluster_release_failed", nick=nick, error=scrub(str(exc), link.url))


class ClientIds:
    """The listeners' client ids in cluster mode: blocks of ID_BLOCK taken from Redis as
    needed (one INCR per million connections, on the accept thread). Guarded by its lock:
    two listeners share it."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._lock = threading.Lock()
        self._next = self._end = 0

    def __iter__(self):
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._next >= self._end:
                block = self._counters.id_block()
                self._next, self._end = block * ID_BLOCK + 1, (block + 1) * ID_BLOCK
            self._next += 1
            return self._next - 1
