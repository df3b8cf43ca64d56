"""Room history (SPEC §10): the in-memory tail of every room, and how it is replayed.

Why an in-memory tail: the seam between replayed and live lines must be exact. A joiner's
reader offset is taken under ``Room.lock`` (rooms.py ``attach``); a line enters the room log
under the same lock. So every history line is appended to its room's :class:`Tail` while that
lock is held, and the joiner's replay is a snapshot of the tail taken at the very moment its
offset is: each line is either in the snapshot (posted before) or in the log after the offset
(posted after), never both, never neither. SQLite (store/sqlite.py) only makes the tails
survive a restart; it is written by its own thread from a queue, so the chat's hot path pays
one ``SimpleQueue.put`` per history line and nothing else.

Which tails are held: every room that exists holds its tail (*pinned*: :meth:`History.acquire`,
:meth:`History.release`). A room that empties keeps its tail *idle*, so that a join soon after
replays it without reading the store (lines from other nodes go on into it, cluster mode:
:meth:`History.record_remote`; a room without a tail here gets none from them), and so does
a room admin ``history`` looked at. Idle tails are bounded, whoever made them: at most
``idle_rooms`` of them and ``idle_bytes`` of their lines (text plus ``ENTRY_BYTES`` a line), least recently used dropped
first (issue 22: 48,600 room names joined and left held 65 MB for good). A dropped tail is
read again from the store by the next :meth:`History.acquire`, which waits first until the
store has written what the tail held when it was dropped (``store.mark()``).

Locks: ``History._lock`` guards the table (``_tails``, ``_pins``, ``_idle``, ``_unwritten``,
the counts); it is taken under the hub lock (a room emptied, a remote line) or alone, and
only ``Tail.lock`` (to size a tail) is taken inside it. ``Tail.lock`` guards one tail's
deque; it is taken under ``Room.lock`` (post, attach) or alone (``/history``, admin history
and purge). No store I/O happens under either, nor under the hub lock: :meth:`History.acquire`
reads the store with no lock held and the hub calls it before taking its own; under the hub
lock only tails already in memory are used (a store that reads from memory, cluster mode's
snapshot, is the exception :meth:`History.record_remote` allows).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from chatd.core.tail import Tail
from chatd.text import fold

#: How long a join waits for the store to write a dropped tail's lines before reading it back.
UNWRITTEN_WAIT = 5.0
#: How long a join waits for another thread's read of the same room's tail.
LOAD_WAIT = 10.0


class History:
    """Every room's tail: pinned while its room exists, idle and bounded after (see the module
    docstring). The hub calls :meth:`acquire` (no lock held) and :meth:`release`; admin
    commands :meth:`tail`, :meth:`purge`, :meth:`forget`; the cluster bus
    :meth:`record_remote` (through the hub)."""

    def __init__(self, store, lines: int, on_join: int, idle_rooms: int = 1000,
                 idle_bytes: int = 16 * 1024 * 1024) -> None:
        self.store = store
        self.lines = lines
        self.on_join = min(on_join, lines)
        self.idle_rooms = idle_rooms
        self.idle_bytes = idle_bytes
        self._lock = threading.Lock()
        self._tails: dict = {}  # folded room name -> Tail, pinned or idle
        self._pins: dict = {}  # folded room name -> rooms (and joiners) holding it, > 0
        self._idle: OrderedDict = OrderedDict()  # folded name -> bytes, least recent first
        self._idle_total = 0
        self._unwritten: dict = {}  # folded name -> store mark of a dropped tail
        self.dropped = 0  # idle tails dropped since start
        #: This node's name in a cluster, the origin of its lines (Position); set by the
        #: service once the cluster is joined, before the first tail is made.
        self.me = ""

    def counts(self) -> dict:
        """What admin ``status`` shows: tails held (pinned and idle), idle ones and their
        bytes, tails dropped since start."""
        with self._lock:
            return {"history_tails": len(self._tails), "history_idle_tails": len(self._idle),
                    "history_idle_bytes": self._idle_total, "history_tails_dropped": self.dropped}

    def set_idle_bounds(self, rooms: int, size: int) -> None:
        """A reload's ``history_idle_rooms`` and ``history_idle_bytes``, applied at once."""
        with self._lock:
            self.idle_rooms, self.idle_bytes = rooms, size
            self._drop_over_bound()

    def acquire(self, room: str) -> Tail:
        """The room's tail, pinned until :meth:`release`. Reads the store if the tail is not
        in memory: call it with no lock held (the hub calls it before taking its own)."""
        key = fold(room)
        positioned = getattr(self.store, "positioned", False)
        with self._lock:
            tail = self._tails.get(key)
            fresh = tail is None and positioned
            if fresh:  # in the table before it is read (module docstring)
                tail = self._tails[key] = Tail(self.lines, self.store, [], self.me)
                tail.pending, tail.ready = [], threading.Event()
            if tail is not None:
                self._pin(key)
            mark = self._unwritten.pop(key, None)
        if fresh:
            return self._read_positioned(key, tail)
        if tail is not None:
            if tail.ready is not None:  # another joiner's read of it: wait for the end
                tail.ready.wait(LOAD_WAIT)
            return tail
        if mark is not None:  # what the dropped tail held must be in the store first
            mark.wait(UNWRITTEN_WAIT)
        loaded = self.store.load(key, self.lines)
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:  # else another thread read it meanwhile: that one is the tail
                tail = self._tails[key] = Tail(self.lines, self.store, loaded, self.me)
            self._pin(key)
            return tail

    def release(self, room: str) -> None:
        """The room holding the tail is gone (or a joiner did not need it): the tail turns
        idle when nobody holds it, and the idle bound applies. No I/O (hub lock held)."""
        key = fold(room)
        with self._lock:
            pins = self._pins[key] - 1
            if pins:
                self._pins[key] = pins
                return
            del self._pins[key]
            self._make_idle(key, self._tails[key].size())

    def tail(self, room: str) -> Tail:
        """The room's tail for a look or a purge (admin): not pinned; one not in memory is
        read from the store (no lock held) and kept idle."""
        key = fold(room)
        with self._lock:
            tail = self._tails.get(key)
            if tail is not None:
                if key in self._idle:
                    self._idle.move_to_end(key)
                return tail
        tail = self.acquire(room)
        self.release(room)
        return tail

    def purge(self, room: str) -> int:
        """``chatctl purge``: this node's tail and the store (in a cluster, the store tells
        the other nodes, which call :meth:`forget`)."""
        count = self.tail(room).purge(fold(room))
        self._resize(fold(room))
        return count

    def forget(self, room: str) -> None:
        """Another node purged ``room``: drop this node's tail of it (the store is done)."""
        self.tail(room).purge(fold(room), store=False)
        self._resize(fold(room))

    def record_remote(self, room: str, events: list, position=None, stamps=None,
                      origin: str = "") -> None:
        """Lines from another node for a room with no members here (hub lock held, so no
        joiner can attach meanwhile): kept in the room's tail if it is in memory (idle, or
        being read). A room without a tail here gets none: its lines are in the cluster's
        store, where the next joiner's :meth:`acquire` reads them (before issue 22, every
        such room kept a tail for good: 100,000 of them cost 150 MB)."""
        key = fold(room)
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                return
            grown = tail.record_remote(room, events, position, stamps, origin)
            if key in self._idle:  # it may have been dropped by its own _make_idle
                self._idle[key] += grown
                self._idle_total += grown
                self._idle.move_to_end(key)
                self._drop_over_bound()

    def _read_positioned(self, key: str, tail: Tail) -> Tail:
        """Read ``tail`` (pending, pinned, in the table) from a store that says which stream
        position the read belongs to; no lock is held while it reads."""
        try:
            loaded, position = self.store.load_positioned(key, self.lines)
        except Exception:  # the store logs why; the tail keeps what arrives from now on
            loaded, position = [], None
        with self._lock:  # (record_remote appends to pending under it)
            tail.finish(loaded, position)
        return tail

    # -- History._lock held ------------------------------------------------------------------

    def _pin(self, key: str) -> None:
        self._pins[key] = self._pins.get(key, 0) + 1
        size = self._idle.pop(key, None)
        if size is not None:
            self._idle_total -= size

    def _make_idle(self, key: str, size: int) -> None:
        self._idle[key] = size
        self._idle_total += size
        self._drop_over_bound()

    def _resize(self, key: str) -> None:
        """An idle tail changed (remote lines, a purge): count it again, as most recent."""
        with self._lock:
            if key in self._idle:
                size = self._tails[key].size()
                self._idle_total += size - self._idle.pop(key)
                self._idle[key] = size
                self._drop_over_bound()

    def _drop_over_bound(self) -> None:
        while self._idle and (len(self._idle) > self.idle_rooms
                              or self._idle_total > self.idle_bytes):
            key, size = self._idle.popitem(last=False)
            self._idle_total -= size
            del self._tails[key]
            self.dropped += 1
            mark = self.store.mark()  # a queue put: what the store has yet to write of it
            if mark is not None:
                self._unwritten[key] = mark
        if len(self._unwritten) > 2 * max(self.idle_rooms, 64):  # forget the written ones
            self._unwritten = {k: m for k, m in self._unwritten.items() if not m.is_set()}
