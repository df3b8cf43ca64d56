"""A room and its fan-out log: how one message reaches every member for O(1) sender work.

A sender does not copy a message into each member's queue. It appends the encoded line once to
the room's ``log`` and, if the room is not already waiting, queues the room with the flusher.
Each member (a *reader*, in the flusher's words) has an offset into the log. When the flusher
takes the room it joins the entries from an offset to the end once, for all readers at that
offset (normally all of them), and hands that one buffer to each reader in one ``send``; a
reader that wrote some of those entries gets a buffer without them (SPEC §1: no echo). Under
load the log gathers many lines between flushes, so the per-recipient cost is paid per batch,
not per message, and joins and leaves cost no extra pass: they only add or drop a reader.

Offsets are global indexes (``base`` is the index of ``log[0]``), so entries every reader has
passed can be dropped from the front without renumbering.

Who may touch what:

- ``lock`` guards ``log``, ``base``, ``queued`` and ``pending`` (readers announced to the
  flusher but not yet attached, so the flusher does not drop entries they still need).
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


class Room:
    __slots__ = ("name", "members", "lock", "log", "base", "queued", "pending", "readers",
                 "_flusher")

    def __init__(self, name: str, flusher) -> None:
        self.name = name
        self.members: dict = {}  # client id -> Client; hub lock
        self.lock = threading.Lock()
        self.log: list = []  # (author outbox or None, data, line count)
        self.base = 0
        self.queued = False
        self.pending: dict = {}  # outbox -> offset, until the flusher attaches it
        self.readers: dict = {}  # outbox -> offset; flusher thread only
        self._flusher = flusher

    def post(self, author, data: bytes, lines: int = 1) -> None:
        """Deliver ``data`` to every member but ``author`` (an outbox, or None for everyone).

        Never blocks on I/O. The room is queued while the lock is held, so the flusher's queue
        order matches the order in which lines entered the log.
        """
        with self.lock:
            self.log.append((author, data, lines))
            if not self.queued:
                self.queued = True
                self._flusher.submit_room(self)

    def attach(self, outbox) -> None:
        """``outbox`` reads from now on (caller holds the hub lock and added the member)."""
        with self.lock:
            offset = self.base + len(self.log)
            self.pending[outbox] = offset
            self._flusher.submit_attach(self, outbox, offset)

    def detach(self, outbox) -> None:
        """``outbox`` gets what was posted up to now, then nothing (hub lock held)."""
        with self.lock:
            self._flusher.submit_detach(self, outbox, self.base + len(self.log))

    def send_private(self, outbox, data: bytes, lines: int) -> None:
        """Queue a private line for a member, after the room lines posted before it."""
        with self.lock:
            self._flusher.submit_private(outbox, data, lines, self, self.base + len(self.log))

    # -- the flusher thread's side ------------------------------------------------------------
    # ``deliver(outbox, data, lines)`` is the flusher's: it sends or backlogs, never blocks.

    def flush(self, deliver) -> None:
        """Hand every reader what was posted since its offset, one buffer per reader."""
        with self.lock:
            self.queued = False
            base, log = self.base, self.log
            end = base + len(log)
        groups: dict[int, list] = {}
        for outbox, offset in self.readers.items():
            if offset < end:
                groups.setdefault(offset, []).append(outbox)
        readers = self.readers
        for offset, outboxes in groups.items():
            entries = log[offset - base:end - base]  # only the flusher drops entries
            shared = b"".join([e[1] for e in entries])
            shared_lines = sum(e[2] for e in entries)
            authors = {e[0] for e in entries}
            for outbox in outboxes:
                readers[outbox] = end
                if outbox in authors:
                    _deliver_except(deliver, outbox, entries)
                else:
                    deliver(outbox, shared, shared_lines)
        self._trim()

    def catch_up(self, outbox, end: int | None, deliver) -> None:
        """One reader gets what was posted from its offset up to ``end`` (None: up to now)."""
        offset = self.readers.get(outbox)
        if offset is None:
            return
        with self.lock:
            base = self.base
            if end is None:
                end = base + len(self.log)
            entries = self.log[offset - base:end - base]
        if offset < end:
            self.readers[outbox] = end
            _deliver_except(deliver, outbox, entries)

    def add_reader(self, outbox, offset: int, deliver) -> None:
        with self.lock:
            self.pending.pop(outbox, None)
        self.readers[outbox] = offset
        self.catch_up(outbox, None, deliver)  # lines a flush passed by before we got here

    def remove_reader(self, outbox, end: int, deliver) -> None:
        self.catch_up(outbox, end, deliver)
        self.readers.pop(outbox, None)
        self._trim()

    def _trim(self) -> None:
        """Drop the entries every reader (and every reader yet to attach) has passed."""
        with self.lock:
            end = self.base + len(self.log)
            low = min(min(self.readers.values(), default=end),
                      min(self.pending.values(), default=end))
            if low > self.base:
                del self.log[:low - self.base]
                self.base = low


def _deliver_except(deliver, outbox, entries) -> None:
    own = [e for e in entries if e[0] is not outbox]
    if own:
        deliver(outbox, b"".join([e[1] for e in own]), sum(e[2] for e in own))
