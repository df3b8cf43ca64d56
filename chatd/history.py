"""Room history (SPEC §10): the in-memory tail of every room, and how it is replayed.

Why an in-memory tail: the seam between replayed and live lines must be exact. A joiner's
reader offset is taken under ``Room.lock`` (rooms.py ``attach``); a line enters the room log
under the same lock. So every history line is appended to its room's :class:`Tail` while that
lock is held, and the joiner's replay is a snapshot of the tail taken at the very moment its
offset is: each line is either in the snapshot (posted before) or in the log after the offset
(posted after), never both, never neither. SQLite (historystore.py) only makes the tails
survive a restart; it is written by its own thread from a queue, so the chat's hot path pays
one ``SimpleQueue.put`` per history line and nothing else.

Locks: ``History._lock`` guards the ``_tails`` table (taken under the hub lock when a room is
created; innermost but for ``Tail.lock``). ``Tail.lock`` guards one tail's deque; it is taken
under ``Room.lock`` (post, attach) or alone (``/history``, admin history and purge). Nothing
under either does I/O except the first lookup of a room, which reads its tail from SQLite once.

Tails are never dropped while the daemon runs (a room that empties keeps its tail, so
its history is whole when somebody comes back); memory is rooms x ``history_lines`` lines.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

from chatd.events import Acted, Said
from chatd.protocol import fold

KINDS = {Said: "say", Acted: "me"}


class Entry(NamedTuple):
    """One stored line: UTC epoch seconds, the room as spelled, ``say`` or ``me``. A named
    tuple: one is made per room line, on the posting thread, so it must be cheap to build."""

    ts: float
    room: str
    kind: str
    nick: str
    text: str

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.ts))
        if self.kind == "me":
            return f"[{stamp}] * {self.nick} {self.text}"
        return f"[{stamp}] <{self.nick}> {self.text}"

    def as_dict(self) -> dict:
        return {"ts": self.ts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts)),
                "room": self.room, "kind": self.kind, "nick": self.nick, "text": self.text}


def block(room: str, entries: list) -> bytes:
    """The SPEC §10 replay: header, one line per entry, footer, CRLF-terminated."""
    lines = [f"*** history of {room} ({len(entries)} lines)", *(e.line() for e in entries),
             "*** end of history"]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def fit(room: str, entries: list, budget: int) -> list:
    """The newest ``entries`` whose replay fits ``budget`` bytes (a replay must never
    overflow the client's send queue and get it disconnected)."""
    size = len(block(room, []))
    kept = 0
    for entry in reversed(entries):
        size += len(entry.line().encode("utf-8")) + 2
        if size > budget:
            break
        kept += 1
    return entries[len(entries) - kept:]


class Tail:
    """The newest ``history_lines`` entries of one room (see the module docstring)."""

    __slots__ = ("lock", "entries", "store")

    def __init__(self, lines: int, store, loaded: list) -> None:
        self.lock = threading.Lock()
        self.entries: deque = deque(loaded, maxlen=lines)
        self.store = store

    def record(self, room: str, event, store: bool = True) -> None:
        """Called with ``Room.lock`` held: keep ``event`` if it is a history line. ``store``
        False: a line from another node, which its origin node stores (cluster mode)."""
        kind = KINDS.get(event.__class__)
        if kind is None:
            return
        entry = Entry(time.time(), room, kind, event.nick, event.text)
        with self.lock:
            self.entries.append(entry)
            if store:
                self.store.put(entry)  # a queue put, in order with the tail

    def last(self, count: int) -> list:
        if count <= 0:
            return []
        with self.lock:
            entries = self.entries
            return list(entries)[-count:] if count < len(entries) else list(entries)

    def purge(self, room_key: str, store: bool = True) -> int:
        with self.lock:
            count = len(self.entries)
            self.entries.clear()
            if store:
                self.store.purge(room_key)
        return count


class History:
    """Every room's tail, created on first use from the store."""

    def __init__(self, store, lines: int, on_join: int) -> None:
        self.store = store
        self.lines = lines
        self.on_join = min(on_join, lines)
        self._lock = threading.Lock()
        self._tails: dict = {}  # folded room name -> Tail

    def tail(self, room: str) -> Tail:
        key = fold(room)
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = Tail(self.lines, self.store, self.store.load(key, self.lines))
            return tail

    def purge(self, room: str) -> int:
        """``chatctl purge``: this node's tail and the store (in a cluster, the store tells
        the other nodes, which call :meth:`forget`)."""
        return self.tail(room).purge(fold(room))

    def forget(self, room: str) -> None:
        """Another node purged ``room``: drop this node's tail of it (the store is done)."""
        self.tail(room).purge(fold(room), store=False)

    def record_remote(self, room: str, events: list) -> None:
        """Lines from another node for a room with no members here (hub lock held, so no
        joiner can attach meanwhile): kept in the tail, so a later joiner's replay is whole."""
        tail = self.tail(room)
        for event in events:
            tail.record(room, event, store=False)
