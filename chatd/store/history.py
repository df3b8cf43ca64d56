"""Where room history persists: the stores' interface, and the two that need no file.

The interface every store has (core/history.py uses nothing else): ``put(entry)`` and
``purge(room_key)`` queue work and never block; ``load(room_key, n)`` returns the newest n
entries, oldest first; ``start()`` / ``stop(timeout)``; ``flush(timeout)`` waits until what
was queued is written (the upgrade, upgrade.py, so the new process reads every line);
``mark()`` returns, without waiting, an Event set once what was queued before it is written
(or None: nothing is ever pending), so that a tail dropped from memory is read back whole.
Three stores: :class:`NullStore` (history off), ``SqliteStore`` (one node: sqlite.py) and
:class:`RedisStore` (cluster mode: Redis, written by the bus).
"""

from __future__ import annotations


class HistoryFileError(Exception):
    """The history file cannot be used safely at start; the message is one line for the operator."""


class NullStore:
    """history_lines = 0: nothing is kept anywhere."""

    def check(self) -> None:
        pass

    def put(self, entry) -> None:
        pass

    def purge(self, room_key: str) -> None:
        pass

    def load(self, room_key: str, count: int) -> list:
        return []

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def mark(self):
        return None


class RedisStore(NullStore):
    """Cluster mode: ``chatd:history:ROOM`` in Redis (chatd/cluster/). The bus appends each of
    this node's lines in the same transaction as the stream entry that carries it, so there
    is nothing to put here; a read returns the stream position it belongs to
    (``positioned``), which is how history.py meets the lines the reader delivers exactly."""

    positioned = True

    def __init__(self, bus) -> None:
        self.bus = bus

    def purge(self, room_key: str) -> None:
        self.bus.purge_history(room_key)

    def load_positioned(self, room_key: str, count: int) -> tuple[list, tuple]:
        return self.bus.read_history(room_key, count)
