"""A room and its fan-out log: how one message reaches every member for O(1) sender work.

A sender does not copy a message into each member's queue. It appends the event, with its line
rendered once per protocol spoken in the room, to the room's ``log`` and, if the room is not
already waiting, queues the room's flush with the flusher. Each member (a *reader*, in the
flusher's words) has an offset into the log. When the flusher takes the room it joins the
entries from an offset to the end once, for all readers at that offset (normally all of them),
and hands that one buffer to each reader in one ``send``; a reader that wrote some of those
entries gets a buffer without them (docs/protocol.md §1: no echo). Under load the log gathers
many lines between flushes, so the per-recipient cost is paid per batch, not per message, and
joins and leaves cost no extra pass: they only add or drop a reader.

Readers at one offset who speak different protocols get one joined buffer per protocol. An
entry holds its text in the room's first protocol; the others' texts wait in ``renders``, and
a protocol whose first member joined after a line was posted renders that line when a flush
first needs it (the flusher thread). ``plain_since`` says from which offset on every entry is
in one protocol, so that a room of one protocol (nearly every room) is flushed as before the
protocol seam: no table is read, one subscript a line.

Offsets are global indexes (``base`` is the index of ``log[0]``), so entries every reader has
passed can be dropped from the front without renumbering.

Who may touch what:

- ``lock`` guards ``log``, ``base``, ``queued``, ``renders``, ``plain_*``, ``ignorers`` (the
  members' outboxes that ignore someone: core/ignoring.py), ``joining`` and ``barriers``:
  offsets the flusher has been told about but not reached in its queue yet. A
  flush must not drop entries a joiner still needs (``joining``), and must not give a reader
  entries posted after a *barrier*: the moment it left the room, or was sent a private line
  that is still queued (``barriers``; the queued item removes it when the flusher gets
  there). Lists, in order, because a client may leave and come back before the flusher
  catches up. Nothing under it does socket I/O; it is taken after the hub lock, before the
  flusher's.
- ``members`` (client id -> Client) is guarded by the hub lock; so are writes of ``state``.
- ``readers`` (outbox -> offset) belongs to the flusher thread alone (roomflush.py: the
  methods that thread runs).

Every change of a reader's position goes through the flusher's queue (``flusher.call``) in
order with the room's flushes, captured under ``lock`` at the moment it happened: a member
receives exactly the lines posted while it was a member, and a private line to it arrives
after every room line posted before the private line was sent.
"""

from __future__ import annotations

import threading
import time

from chatd.core.ignoring import unhidden
from chatd.core.position import START, Position
from chatd.core.roomflush import Flushing
from chatd.core.roomstate import RoomState
from chatd.core.tail import TICK, fit


class Room(Flushing):
    __slots__ = ("name", "members", "lock", "log", "base", "queued", "joining", "barriers",
                 "readers", "_flusher", "tail", "on_join", "speaking", "_speakers", "renders",
                 "plain_since", "plain_protocol", "ignorers", "state", "created")

    def __init__(self, name: str, flusher) -> None:
        self.name = name
        self.members: dict = {}  # client id -> Client; hub lock
        self.lock = threading.Lock()
        #: (author: an outbox, None or a once.Except; the event; its text; the text's protocol)
        self.log: list = []
        self.base = 0
        self.queued = False
        self.joining: dict = {}  # outbox -> [offset, ...] not yet attached by the flusher
        self.barriers: dict = {}  # outbox -> [end, ...]: stop there until the item is processed
        self.readers: dict = {}  # outbox -> offset; flusher thread only
        self._flusher = flusher
        self.tail = None  # history.Tail, or None: no history; appended to under ``lock``
        self.on_join = 0  # history lines replayed to a joiner
        #: What a post renders for, as (the first protocol of the members, its renderer for
        #: this room, (protocol, renderer) for each other protocol spoken here): replaced
        #: whole (hub lock) so that posts, which do not take the hub lock, read it as it was.
        self.speaking: tuple = _SILENT
        self._speakers: dict = {}  # protocol -> members speaking it; hub lock
        #: offset -> {protocol: text}: an entry's text in the room's other protocols (lock).
        self.renders: dict = {}
        #: Every entry from offset ``plain_since`` on has its text in ``plain_protocol``, so a
        #: flush for readers of it reads no render table (lock).
        self.plain_since = 0
        self.plain_protocol = None
        #: Readers that ignore someone (lock): a flush groups them by what they ignore and
        #: gives each group a filtered buffer; empty (nearly always) costs a flush one test.
        self.ignorers: set = set()
        #: Who owns and runs the room (roomstate.RoomState): replaced whole under the hub
        #: lock, read without it (stewardship.py).
        self.state = RoomState()
        self.created = time.time()  # when it was made on this node (IRC's 329)

    def _end(self) -> int:
        return self.base + len(self.log)

    def post(self, author, event, publish=None) -> None:
        """Deliver ``event`` to every member but ``author`` (an outbox, or None for everyone,
        or once.Except: several outboxes).

        The line is rendered once per protocol, here, before the lock is taken; the log keeps
        it next to the event. Never blocks on I/O. The flush is queued while the lock is held,
        so the flusher's queue order matches the order in which lines entered the log.
        ``publish(room, event, time)``: the cluster bus's (a queue append), called under the
        lock with the time the history gave the line, so that the other nodes get one node's
        lines of a room in the order of their times (position.Position counts on it).
        """
        protocol, render, other_protocols = self.speaking
        text = render(event)
        others = {q: r(event) for q, r in other_protocols} if other_protocols else None
        with self.lock:
            if others is not None or protocol is not self.plain_protocol:
                self._note(protocol, [others])
            self.log.append((author, event, text, protocol))
            stamp = self.tail.record(self.name, event) if self.tail is not None else None
            if publish is not None:
                publish(self.name, event, stamp)
            if not self.queued:
                self.queued = True
                self._flusher.call(self.flush)

    def post_many(self, author, events: list, stamps=None, origin: str = "",
                  authors: list | None = None) -> None:
        """:meth:`post` of several events under one taking of the lock: another node's
        (``origin``) lines, which arrive in batches, with the time it gave each
        (``stamps``, Tail.record_remote); ``authors``: one ``author`` per event instead
        (once.py's, for the few lines some members had in another room)."""
        protocol, render, other_protocols = self.speaking
        if authors is None:
            entries = [(author, event, render(event), protocol) for event in events]
        else:
            entries = [(by, event, render(event), protocol) for by, event in zip(authors, events)]
        others = [{q: r(event) for q, r in other_protocols} for event in events] \
            if other_protocols else None
        with self.lock:
            if others is not None or protocol is not self.plain_protocol:
                self._note(protocol, others or [None])
            self.log.extend(entries)
            if self.tail is not None:  # another node's lines (the hub's deliver): stored there
                self.tail.record_remote(self.name, events, None, stamps, origin)
            if not self.queued:
                self.queued = True
                self._flusher.call(self.flush)

    def _note(self, protocol, others: list) -> None:
        """Entries about to be appended (lock held) are in ``protocol``, and ``others`` (one
        dict or None each) holds their texts in the room's other protocols."""
        end = self.base + len(self.log)
        if protocol is not self.plain_protocol:
            self.plain_since, self.plain_protocol = end, protocol
        for offset, texts in enumerate(others, end):
            if texts is not None:
                self.renders[offset] = texts

    def enter(self, client, first: tuple[bytes, int] | None = None,
              since: Position | None = None) -> int:
        """``client`` becomes a member and reads from now on (hub lock held; see attach)."""
        self.members[client.id] = client
        self._speaks(client.outbox.speaks, 1)
        return self.attach(client.outbox, first, since)

    def leave(self, client) -> Position:
        """``client`` is a member no more; it gets what was posted up to now (hub lock held).
        Returns where it stands in the history (:meth:`detach`)."""
        del self.members[client.id]
        self._speaks(client.outbox.speaks, -1)
        return self.detach(client.outbox)

    def _speaks(self, protocol, delta: int) -> None:
        """One member more (``delta`` 1) or fewer (-1) renders with ``protocol`` (hub lock
        held): ``speaking`` changes when the first comes or the last goes."""
        speakers = self._speakers.get(protocol, 0) + delta
        if speakers:
            self._speakers[protocol] = speakers
        else:
            del self._speakers[protocol]
        if speakers == 0 or (speakers == 1 and delta > 0):
            self.speaking = _speaking(tuple(self._speakers), self.name)

    def respeak(self, old, new) -> None:
        """A member's lines are rendered with ``new`` from now on, not ``old`` (hub lock
        held; IRC: a capability that changes how room lines look, asked for later)."""
        self._speaks(new, 1)
        self._speaks(old, -1)

    def attach(self, outbox, first: tuple[bytes, int] | None = None,
               since: Position | None = None) -> int:
        """``outbox`` reads from now on (caller holds the hub lock and added the member).

        ``first`` (data, lines): what the joiner is told before any line of the room (its
        greeting, ``*** you joined``). It is queued here, under the lock, so that a line
        posted after the joiner could read it is one the joiner gets: room posts do not take
        the hub lock, so queueing it before this call would leave a window. ``since``: an
        account's last line here (§12): the joiner is replayed what came after it instead of
        the last ``on_join`` lines. Returns the index (Tail) of the first history line from
        which the joiner has every line (replayed or live): what a later catch-up
        (:meth:`missed`) stops before."""
        with self.lock:
            if first is not None:
                self._flusher.submit(outbox, *first)
            offset = self._end()
            if outbox.ignoring:
                self.ignorers.add(outbox)
            seen_from = 0
            if self.tail is not None and since is not None:
                block = self._missed(outbox, since, None)
                if block is not None:
                    self._flusher.submit(outbox, *block)
                seen_from = self.tail.index_of_last(0)  # what the block had not, it reads live
            elif self.tail is not None:
                # the history up to exactly this offset, queued ahead of the attach (history.py)
                # within half the joiner's send queue, as /history (counted when queued)
                history = outbox.protocol.history
                replay = fit(self.name, unhidden(outbox.ignoring, self.tail.last(self.on_join)),
                             self._flusher.sendq_bytes // 2, history)
                if replay:
                    self._flusher.submit(outbox, history(self.name, replay), len(replay) + 2)
                seen_from = self.tail.index_of_last(len(replay))
            self.joining.setdefault(outbox, []).append(offset)
            self._flusher.call(self.add_reader, outbox, offset)
            # A flush already queued may run before the attach and pass this reader by; so
            # the next post queues a flush of its own, behind the attach.
            self.queued = False
        return seen_from

    def detach(self, outbox) -> Position:
        """``outbox`` gets what was posted up to now, then nothing (hub lock held); returns
        where it then stands in the history (position.Position; START without history)."""
        with self.lock:
            end = self._end()
            self.barriers.setdefault(outbox, []).append(end)
            self.ignorers.discard(outbox)
            self._flusher.call(self.remove_reader, outbox, end)
            return self.tail.position() if self.tail is not None else START

    def position(self) -> Position:
        """Where a reader of every line of the room stands now (START: no history)."""
        with self.lock:
            return self.tail.position() if self.tail is not None else START

    def missed(self, outbox, since: Position, before: int) -> None:
        """What an account missed here after ``since`` and before index ``before`` (the
        first line its connection was replayed or read live, :meth:`attach`), as a private
        block: an account that logs in on a connection already in its room (§12)."""
        with self.lock:
            block = self._missed(outbox, since, before) if self.tail is not None else None
            if block is not None:
                self._send_private(outbox, *block)

    def _missed(self, outbox, since: Position, before: int | None) -> tuple[bytes, int] | None:
        """The block of lines after ``since`` (and of index below ``before``) for
        ``outbox``'s protocol, within half its send queue; None if there are none and none
        are gone."""
        entries, complete = self.tail.since(since, before)
        entries = unhidden(outbox.ignoring, entries)
        render = outbox.protocol.missed
        kept = fit(self.name, entries, self._flusher.sendq_bytes // 2,
                   lambda room, chosen: render(room, chosen, since.time, None))
        if complete and not entries:
            return None
        gone = None
        if not complete or len(kept) < len(entries):
            gone = kept[0].ts if kept else self.tail.time() + TICK
        return render(self.name, kept, since.time, gone), len(kept) + 2 + (gone is not None)

    def send_private(self, outbox, data: bytes, lines: int) -> None:
        """Queue a private line for a member, after the room lines posted before it (and
        before those posted after it): the member's reading stops at a barrier here, catches
        up to it, gets the line (counted against its send queue), and passes the barrier."""
        with self.lock:
            self._send_private(outbox, data, lines)

    def _send_private(self, outbox, data: bytes, lines: int) -> None:
        self._hold(outbox)
        self._flusher.submit(outbox, data, lines)
        self._flusher.call(self.pass_barrier, outbox)
        self.queued = False  # lines posted from now on need a flush behind these items

    def hold(self, outbox) -> None:
        """For a private line to a member of several rooms (:func:`send_private`): reading here
        stops at a barrier and catches up to it; the line is queued in its last room, then
        :meth:`release` lets it read on. Each room's barrier is taken under that room's lock
        before the line is queued, so the line follows every room line posted before it."""
        with self.lock:
            self._hold(outbox)

    def release(self, outbox) -> None:
        """The end of :meth:`hold`: pass the barrier, then flush, since lines posted in this
        room meanwhile stopped at it and may have no flush queued behind it."""
        with self.lock:
            self._flusher.call(self.pass_barrier, outbox)
            self.queued = True
            self._flusher.call(self.flush)

    def ignoring_changed(self, outbox) -> None:
        """A member's ignore list (``outbox.ignoring``) changed: flushes from now on filter
        its lines, or stop doing so."""
        with self.lock:
            if outbox.ignoring:
                self.ignorers.add(outbox)
            else:
                self.ignorers.discard(outbox)

    def _hold(self, outbox) -> None:
        end = self._end()
        self.barriers.setdefault(outbox, []).append(end)
        self._flusher.call(self.catch_up, outbox, end)


def send_private(rooms, outbox, data: bytes, lines: int) -> None:
    """A private line to a member of ``rooms`` (one or more): after every line posted before
    it in each of them, before every line posted after it (Room.hold)."""
    *others, last = rooms
    for room in others:
        room.hold(outbox)
    last.send_private(outbox, data, lines)
    for room in others:
        room.release(outbox)


def _silent(event) -> None:
    return None  # a room with no members renders nothing (its lines reach other nodes)


_SILENT = (None, _silent, ())


def _speaking(protocols: tuple, room: str) -> tuple:
    """``Room.speaking`` for members of room ``room`` speaking ``protocols`` (in the order
    they came): each protocol's renderer for this room (protocol.py ``RoomRenderer``)."""
    if not protocols:
        return _SILENT
    return (protocols[0], protocols[0].renderer(room),
            tuple((q, q.renderer(room)) for q in protocols[1:]))
