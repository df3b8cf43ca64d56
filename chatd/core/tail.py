"""One room's history in memory: its :class:`Tail` of :class:`Entry` lines, and the replay
block's fitting (:func:`fit`). history.py says why tails exist, who holds them and the locks;
position.py what a line's time and node are for."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

from chatd.core.events import Acted, Said
from chatd.core.position import MAX_ORIGINS, Position

KINDS = {Said: "say", Acted: "me"}
#: What one entry costs besides its nick and text, roughly (the tuple, its float, two str
#: headers, the deque slot): what ``history_idle_bytes`` counts per line.
ENTRY_BYTES = 200
#: Two lines of one room from one node never share a time: the later one is moved this much
#: past the earlier (a microsecond, well above a float's resolution for today's epoch times),
#: so a line's time and its node say which line it is (position.Position, §12).
TICK = 1e-6


class Entry(NamedTuple):
    """One stored line: UTC epoch seconds, the room as spelled, ``say`` or ``me``. A named
    tuple: one is made per room line, on the posting thread, so it must be cheap to build."""

    ts: float
    room: str
    kind: str
    nick: str
    text: str
    #: The node the line was said on, which gave it its time ("" on a single node).
    origin: str = ""

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.ts))
        if self.kind == "me":
            return f"[{stamp}] * {self.nick} {self.text}"
        return f"[{stamp}] <{self.nick}> {self.text}"

    def as_dict(self) -> dict:
        return {"ts": self.ts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts)),
                "room": self.room, "kind": self.kind, "nick": self.nick, "text": self.text}


def fit(room: str, entries: list, budget: int, block) -> list:
    """The newest ``entries`` whose replay fits ``budget`` bytes (a replay must never
    overflow the client's send queue and get it disconnected); ``block(room, entries)`` is the
    client's protocol's replay, whose size is its empty block's plus one line per entry."""
    size = empty = len(block(room, []))
    kept = 0
    for entry in reversed(entries):
        size += len(block(room, [entry])) - empty
        if size > budget:
            break
        kept += 1
    return entries[len(entries) - kept:]


class Tail:
    """The newest ``history_lines`` entries of one room (see the module docstring).

    Besides its entries, a tail knows the newest time of each node's lines in it
    (``newest``, what :meth:`position` gives) and how many entries it ever held (``count``):
    an entry's *index* is its place in that count, which a connection's ``seen_from`` is
    (Room.attach)."""

    __slots__ = ("lock", "entries", "store", "pending", "ready", "me", "newest", "count")

    def __init__(self, lines: int, store, loaded: list, me: str = "") -> None:
        self.lock = threading.Lock()
        self.entries: deque = deque(maxlen=lines)
        self.store = store
        self.me = me  # this node's name in a cluster ("" on a single node): its lines' origin
        self.newest: dict = {}  # origin -> the time of its newest line here
        self.count = 0
        self._extend(loaded)
        #: While the tail is read from a store that says where it read (cluster mode): the
        #: other nodes' lines that arrived meanwhile, with their stream and position in it
        #: (finish()).
        self.pending: list | None = None
        self.ready: threading.Event | None = None  # set once read (None: never loading)

    def _extend(self, loaded) -> None:
        for entry in loaded:
            self._append(entry)

    def _append(self, entry) -> None:
        """(lock held, or not shared yet)"""
        self.entries.append(entry)
        self.count += 1
        newest = self.newest
        if entry.ts > newest.get(entry.origin, 0.0) and (
                entry.origin in newest or len(newest) < MAX_ORIGINS):
            newest[entry.origin] = entry.ts

    def finish(self, loaded: list, position: dict | None) -> None:
        """The read is done: the tail is what was read, then the lines that arrived meanwhile
        from after the read's ``position`` (where it stood in each stream: those before it
        were in what was read). A line of a stream the read did not look at (a node whose
        hello came after it) is kept if it is newer than that node's newest line read."""
        with self.lock:
            pending, self.pending = self.pending or (), None
            self.entries = deque(maxlen=self.entries.maxlen)
            self.newest, self.count = {}, 0
            self._extend(loaded)
            read = dict(self.newest)
            for at, entry in pending:
                if position is None or at is None:
                    self._append(entry)
                    continue
                stream, where = at
                before = position.get(stream)
                if (where > before) if before is not None else \
                        entry.ts > read.get(entry.origin, 0.0):
                    self._append(entry)
        self.ready.set()

    def record(self, room: str, event) -> float | None:
        """Called with ``Room.lock`` held: keep ``event`` if it is a history line of this
        node's, and store it; returns its time (which goes with it to the other nodes), or
        None if it is no history line."""
        kind = KINDS.get(event.__class__)
        if kind is None:
            return None
        now = time.time()
        me = self.me
        with self.lock:
            newest = self.newest
            last = newest.get(me, 0.0)
            if now <= last:  # every line of a node its own time (Position)
                now = last + TICK
            entry = Entry(now, room, kind, event.nick, event.text, me)
            self.entries.append(entry)  # (_append, inline: once per chat line)
            self.count += 1
            newest[me] = now  # (this node's own origin: always kept)
            self.store.put(entry)  # a queue put, in order with the tail
        return now

    def record_remote(self, room: str, events: list, position=None, stamps=None,
                      origin: str = "") -> int:
        """Another node's lines (``origin``; ``stamps``: the time it gave each, None for one
        from a node too old to send it, which gets ours), which that node stores; returns
        how many bytes (as :meth:`size` counts) the tail grew by, the lines pushed out
        deducted: O(events), not O(lines)."""
        grown = 0
        for i, event in enumerate(events):
            kind = KINDS.get(event.__class__)
            if kind is None:
                continue
            stamp = stamps[i] if stamps is not None else None
            entry = Entry(time.time() if stamp is None else stamp, room, kind, event.nick,
                          event.text, origin)
            with self.lock:
                if self.pending is not None:  # being read: finish() sorts it out
                    self.pending.append((position, entry))
                    continue
                entries = self.entries
                if len(entries) == entries.maxlen:
                    old = entries[0]
                    grown -= ENTRY_BYTES + len(old.nick) + len(old.text)
                self._append(entry)
            grown += ENTRY_BYTES + len(event.nick) + len(event.text)
        return grown

    def position(self) -> Position:
        """Where a reader that leaves now stands (Room lock held: no line is added
        meanwhile)."""
        with self.lock:
            return Position(dict(self.newest))

    def time(self) -> float:
        """The time of the newest line (0.0: none)."""
        with self.lock:
            return max(self.newest.values(), default=0.0)

    def since(self, since: Position, before: int | None = None) -> tuple[list, bool]:
        """The lines after ``since`` (and of index below ``before``), and whether that is all
        of them: False when the tail is full and its oldest line is after ``since`` (older
        lines were dropped)."""
        with self.lock:
            entries = self.entries
            complete = (len(entries) < (entries.maxlen or 0) or not entries
                        or not since.after(entries[0]))
            first = self.count - len(entries)  # the index of entries[0]
            end = len(entries) if before is None else max(0, min(len(entries), before - first))
            chosen = [e for i, e in enumerate(entries) if i < end and since.after(e)]
        return chosen, complete

    def index_of_last(self, count: int) -> int:
        """The index of the first of the newest ``count`` lines (the end index if none)."""
        with self.lock:
            return self.count - min(count, len(self.entries))

    def size(self) -> int:
        """Bytes the entries hold, as ``history_idle_bytes`` counts them: O(lines)."""
        with self.lock:
            return sum(ENTRY_BYTES + len(e.nick) + len(e.text) for e in self.entries)

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
