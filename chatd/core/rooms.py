"""A room and its fan-out log: how one message reaches every member for O(1) sender work.

A sender does not copy a message into each member's queue. It appends the event, with its line
rendered once (render.py), to the room's ``log`` and, if the room is not already waiting,
queues the room with the flusher. Each member (a *reader*, in the flusher's words) has an
offset into the log. When the flusher takes the room it joins the entries from an offset to
the end once, for all readers at that offset (normally all of them), and hands that one buffer
to each reader in one ``send``; a reader that wrote some of those entries gets a buffer without
them (docs/protocol.md §1: no echo). Under load the log gathers many lines between flushes, so
the per-recipient cost is paid per batch, not per message, and joins and leaves cost no extra
pass: they only add or drop a reader.

Offsets are global indexes (``base`` is the index of ``log[0]``), so entries every reader has
passed can be dropped from the front without renumbering.

Who may touch what:

- ``lock`` guards ``log``, ``base``, ``queued``, ``joining`` and ``barriers``: offsets the
  flusher has been told about but not reached in its queue yet. A flush must not drop entries
  a joiner still needs (``joining``), and must not give a reader entries posted after a
  *barrier*: the moment it left the room, or was sent a private line that is still queued
  (``barriers``; the queued item removes it when the flusher gets there). Lists, in order,
  because a client may leave and come back before the flusher catches up.
  Nothing under it does socket I/O; it is taken after the hub lock, before the flusher's.
- ``members`` (client id -> Client) is guarded by the hub lock.
- ``readers`` (outbox -> offset) belongs to the flusher thread alone.

Every change of a reader's position goes through the flusher's queue in order with the room's
flushes, captured under ``lock`` at the moment it happened: a member receives exactly the lines
posted while it was a member, and a private line to it arrives after every room line posted
before the private line was sent.
"""

from __future__ import annotations

import threading

from chatd.core.history import block as history_block
from chatd.core.history import fit
from chatd.line.render import line


class Room:
    __slots__ = ("name", "members", "lock", "log", "base", "queued", "joining", "barriers",
                 "readers", "_flusher", "tail", "on_join")

    def __init__(self, name: str, flusher) -> None:
        self.name = name
        self.members: dict = {}  # client id -> Client; hub lock
        self.lock = threading.Lock()
        self.log: list = []  # (author outbox or None, event, rendered line)
        self.base = 0
        self.queued = False
        self.joining: dict = {}  # outbox -> [offset, ...] not yet attached by the flusher
        self.barriers: dict = {}  # outbox -> [end, ...]: stop there until the item is processed
        self.readers: dict = {}  # outbox -> offset; flusher thread only
        self._flusher = flusher
        self.tail = None  # history.Tail, or None: no history; appended to under ``lock``
        self.on_join = 0  # history lines replayed to a joiner

    def _end(self) -> int:
        return self.base + len(self.log)

    def post(self, author, event) -> None:
        """Deliver ``event`` to every member but ``author`` (an outbox, or None for everyone).

        The line is rendered once, here, before the lock is taken; the log keeps it next to the
        event. Never blocks on I/O. The room is queued while the lock is held, so the flusher's
        queue order matches the order in which lines entered the log.
        """
        data = line(event)
        with self.lock:
            self.log.append((author, event, data))
            if self.tail is not None:
                self.tail.record(self.name, event)
            if not self.queued:
                self.queued = True
                self._flusher.submit_room(self)

    def post_many(self, author, events: list) -> None:
        """:meth:`post` of several events under one taking of the lock (lines from another
        node arrive in batches)."""
        entries = [(author, event, line(event)) for event in events]
        with self.lock:
            self.log.extend(entries)
            if self.tail is not None:  # another node's lines (the hub's deliver): stored there
                for event in events:
                    self.tail.record(self.name, event, store=False)
            if not self.queued:
                self.queued = True
                self._flusher.submit_room(self)

    def attach(self, outbox, first: tuple[bytes, int] | None = None) -> None:
        """``outbox`` reads from now on (caller holds the hub lock and added the member).

        ``first`` (data, lines): what the joiner is told before any line of the room (its
        greeting, ``*** you joined``). It is queued here, under the lock, so that a line
        posted after the joiner could read it is one the joiner gets: room posts do not take
        the hub lock, so queueing it before this call would leave a window."""
        with self.lock:
            if first is not None:
                self._flusher.submit(outbox, *first)
            offset = self._end()
            if self.on_join and self.tail is not None:
                # the history up to exactly this offset, queued ahead of the attach (history.py)
                # within half the joiner's send queue, as /history (counted when queued)
                replay = fit(self.name, self.tail.last(self.on_join),
                             self._flusher.sendq_bytes // 2)
                if replay:
                    self._flusher.submit(outbox, history_block(self.name, replay),
                                         len(replay) + 2)
            self.joining.setdefault(outbox, []).append(offset)
            self._flusher.submit_attach(self, outbox, offset)
            # A flush already queued may run before the attach and pass this reader by; so
            # the next post queues a flush of its own, behind the attach.
            self.queued = False

    def detach(self, outbox) -> None:
        """``outbox`` gets what was posted up to now, then nothing (hub lock held)."""
        with self.lock:
            end = self._end()
            self.barriers.setdefault(outbox, []).append(end)
            self._flusher.submit_detach(self, outbox, end)

    def send_private(self, outbox, data: bytes, lines: int) -> None:
        """Queue a private line for a member, after the room lines posted before it (and
        before those posted after it)."""
        with self.lock:
            end = self._end()
            self.barriers.setdefault(outbox, []).append(end)
            self._flusher.submit_private(outbox, data, lines, self, end)
            self.queued = False  # lines posted from now on need a flush behind this item

    # -- the flusher thread's side ------------------------------------------------------------
    # ``deliver(outbox, data, lines)`` is the flusher's: it sends or backlogs, never blocks.

    def flush(self, deliver, deliver_many) -> None:
        """Hand every reader what was posted since its offset, one buffer per reader."""
        with self.lock:
            self.queued = False
            base, log, end = self.base, self.log, self._end()
            stops = {outbox: ends[0] for outbox, ends in self.barriers.items()}
        groups: dict[tuple, list] = {}
        for outbox, offset in self.readers.items():
            stop = stops.get(outbox, end)
            if offset < stop:
                groups.setdefault((offset, stop), []).append(outbox)
        readers = self.readers
        for (offset, stop), outboxes in groups.items():
            entries = log[offset - base:stop - base]  # only the flusher drops entries
            for outbox in outboxes:
                readers[outbox] = stop
            authors = {e[0] for e in entries}
            for outbox in authors.intersection(outboxes):
                _deliver_except(deliver, outbox, entries)
            # no per-flush copy of a 10,000-reader group: allocations that size stay in RSS
            deliver_many(outboxes, authors, b"".join([e[2] for e in entries]), len(entries))
        self._trim()

    def catch_up(self, outbox, end: int, deliver) -> None:
        """One reader gets what was posted from its offset up to ``end``."""
        offset = self.readers.get(outbox)
        if offset is None or offset >= end:
            return
        with self.lock:
            entries = self.log[offset - self.base:end - self.base]
        self.readers[outbox] = end
        _deliver_except(deliver, outbox, entries)

    def add_reader(self, outbox, offset: int) -> None:
        with self.lock:
            _pop_first(self.joining, outbox)
        self.readers[outbox] = offset

    def remove_reader(self, outbox, end: int, deliver) -> None:
        self.catch_up(outbox, end, deliver)
        self.readers.pop(outbox, None)
        self.pass_barrier(outbox)
        self._trim()

    def pass_barrier(self, outbox) -> None:
        """The queued item that set the reader's first barrier has been processed."""
        with self.lock:
            _pop_first(self.barriers, outbox)

    def _trim(self) -> None:
        """Drop the entries every reader (and every reader yet to attach) has passed."""
        with self.lock:
            end = self._end()
            low = min(min(self.readers.values(), default=end),
                      min((offsets[0] for offsets in self.joining.values()), default=end))
            if low > self.base:
                del self.log[:low - self.base]
                self.base = low


def _pop_first(table: dict, outbox) -> None:
    queue = table[outbox]
    del queue[0]
    if not queue:
        del table[outbox]


def _deliver_except(deliver, outbox, entries) -> None:
    own = [e[2] for e in entries if e[0] is not outbox]
    if own:
        deliver(outbox, b"".join(own), len(own))
