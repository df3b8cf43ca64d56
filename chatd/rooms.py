"""A room and its fan-out log: how one message reaches every member for O(1) sender work.

A sender does not copy a message into each member's queue. It appends the encoded line once to
the room's current :class:`Segment` and, if that segment is not already waiting, queues the
segment with the flusher. The flusher later joins everything the segment gathered into one
buffer and hands that buffer to each member's outbox in one ``send`` (members who wrote some of
the lines get a buffer without their own lines, since SPEC §1 says the sender gets no echo).
Under load a segment gathers many lines before the flusher takes it, so the per-recipient cost
is paid per batch, not per message.

A segment carries the member list it was created with. Membership changes start a new segment,
so a line is delivered to exactly the members present when it was posted, and a client that
left never gets lines posted after it left.

Locks: ``Room.lock`` guards ``segment`` and the segment's ``entries``/``queued``. ``members``
is guarded by the hub lock (see hub.py for the lock order: hub lock, then a room lock, then the
flusher's queue lock). Nothing under ``Room.lock`` does socket I/O.
"""

from __future__ import annotations

import threading


class Segment:
    """Lines posted to a room while its membership stayed the same, waiting for the flusher."""

    __slots__ = ("members", "entries", "queued", "lock")

    def __init__(self, members: tuple, lock: threading.Lock) -> None:
        self.members = members  # outboxes, a snapshot: never mutated
        self.entries: list = []  # (author outbox or None, data, line count)
        self.queued = False
        self.lock = lock

    def take(self) -> list:
        """Called by the flusher: everything posted so far; the next post re-queues us."""
        with self.lock:
            entries = self.entries
            self.entries = []
            self.queued = False
        return entries


class Room:
    __slots__ = ("name", "members", "lock", "segment", "_flusher")

    def __init__(self, name: str, flusher) -> None:
        self.name = name
        self.members: dict = {}  # client id -> Client; hub lock
        self.lock = threading.Lock()
        self._flusher = flusher
        self.segment = Segment((), self.lock)

    def membership_changed(self) -> None:
        """Start a new segment for the new member list. Caller holds the hub lock."""
        members = tuple(c.outbox for c in self.members.values())
        with self.lock:
            self.segment = Segment(members, self.lock)

    def post(self, author, data: bytes, lines: int = 1) -> None:
        """Deliver ``data`` to every member but ``author`` (an outbox, or None for everyone).

        Never blocks on I/O. The segment is queued while the room lock is held, so a sender's
        later private line cannot overtake its earlier room line in the flusher's queue.
        """
        with self.lock:
            seg = self.segment
            if not seg.members:
                return
            seg.entries.append((author, data, lines))
            if not seg.queued:
                seg.queued = True
                self._flusher.submit_segment(seg)

    def cut(self) -> None:
        """Close the waiting segment so later posts queue behind a private line just queued.

        Called before a private line goes to a member (see Hub.send_to): without it a room
        line posted after the private one could ride in an earlier, still-waiting segment.
        """
        with self.lock:
            seg = self.segment
            if seg.queued:
                self.segment = Segment(seg.members, self.lock)
