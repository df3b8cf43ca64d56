"""The reader thread: other nodes' entries, opened at the trust boundary and handed on.

It blocks in ``XREAD`` from the last id it handled (so a reconnect resumes exactly there),
opens each entry (codec.py: tag, sequence, size; a bad one is dropped with one rate-limited
``cluster_entry_rejected`` and the reader goes on: one entry can never wedge it), and gives
each line to the handler of its kind (:attr:`Reader.handlers`, a table). Consecutive room
lines for one room go to the hub together (one room lock for the run). Lines:

- ``["r", ROOM, *EVENT]`` a room line (EVENT as wire.py encodes it);
- ``["hidden", TEXT]`` a private line ``["to", FOLDED NICK, *EVENT]``, encrypted
  (codec.Seal.hide: whoever reads Redis reads neither the text nor to whom);
  ``["all", *EVENT]`` an operator's line;
- ``["cmd", ...]``, ``["re", ...]``, ``["gather", ...]``: admin routing (routing.py).

Entries this node wrote are skipped, but for the departures of a node it reaped (``l`` names
that node: every node delivers them, this one too); so are the departures the others announced
for this node while they thought it lost (``l`` is this node): its clients are still here.
"""

from __future__ import annotations

import json
import threading

import structlog

from chatd.cluster.checks import name, stamp_list
from chatd.cluster.codec import Rejected, Replays, shown
from chatd.cluster.keys import STREAM
from chatd.cluster.lane import Lane, bulk, head
from chatd.core import events as ev
from chatd.core.tail import KINDS

log = structlog.get_logger("chatd.cluster")

READ_BLOCK_MS = b"1000"
READ_COUNT = b"1000"
#: The XREAD command but for the id to read after, packed once.
XREAD = head(8, b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", READ_BLOCK_MS, b"STREAMS",
             STREAM.encode())
RETRY_SECONDS = 0.5
ROOM_EVENTS = frozenset((ev.Said, ev.Acted, ev.Joined, ev.Left, ev.Kicked, ev.Renamed,
                         ev.Announcement, ev.TopicSet, ev.RoomKicked, ev.Granted, ev.Revoked,
                         ev.BanSet, ev.BanLifted, ev.ModeSet, ev.RoomRegistered))
#: The room lines a history keeps, by their name on the wire: those a ["ts"] line times.
CHAT_NAMES = frozenset(cls.__name__ for cls in KINDS)


#: What a private line may carry: a /msg, the away answer to one (core/presence.py), an
#: invitation to a room (core/stewardship.py).
_PRIVATE = (ev.PrivateMessage, ev.IsAway, ev.InvitedTo)

class Reader:
    def __init__(self, link, roster, routing, stopping) -> None:
        self.link = link
        self.roster = roster
        self.stopping = stopping  # the publisher's stop event: both threads end together
        self.hub = None
        self.last_id = b"0-0"
        #: The stream position of the last entry handed on (or skipped), for a join that read
        #: history up to a position and must not meet older lines live after it (caught_up).
        #: Written by this thread under _progress, which also wakes those waiting for it.
        self.handled = (0, 0)
        self._progress = threading.Condition(threading.Lock())
        self._waiting = 0  # joins waiting in caught_up(), under _progress
        self._me = b"\0"  # the head of this node's own entries (run())
        self._replays = Replays(link.started_at)
        self.handlers = {"hidden": self._hidden, "all": self._everyone, "cmd": routing.obey,
                         "re": routing.answered, "gather": routing.asked}

    def run(self) -> None:
        link = self.link
        self._me = link.node.encode() + b"  "  # our head, lost empty (name settled by now)
        lane = Lane(link.redis)  # this thread's own connection (lane.py: CPU per XREAD)
        try:
            while not self.stopping.is_set():
                try:
                    [reply] = lane.call(XREAD + bulk(self.last_id))
                    entries = _entries(reply)
                except Exception as exc:
                    link.report(False, exc)
                    self.stopping.wait(RETRY_SECONDS)
                    continue
                link.report(True)
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    self.entry(entry_id, fields)
                if entries:
                    self._handled(position(self.last_id))
        finally:
            lane.close()

    def start_at(self, entry_id: bytes) -> None:
        """Where reading starts (the bus's snapshot): everything up to it counts as handled."""
        self.last_id = entry_id
        self.handled = position(entry_id)

    def _handled(self, at: tuple[int, int]) -> None:
        with self._progress:
            self.handled = at
            if self._waiting:
                self._progress.notify_all()

    def caught_up(self, at: tuple[int, int], timeout: float) -> bool:
        """Wait (at most ``timeout``) until every entry up to ``at`` has been handed on. A
        join reads a room's history from Redis up to the stream's newest entry, which this
        reader may not have handed on yet: without the wait, those older lines would reach
        the joiner live after its replay, twice and out of order. Never called on this
        thread (it would wait for itself)."""
        with self._progress:
            self._waiting += 1
            try:
                return self._progress.wait_for(lambda: self.handled >= at, timeout)
            finally:
                self._waiting -= 1

    def entry(self, entry_id, fields) -> None:
        """One stream entry: opened, then its lines in order. Nothing in it ends the reader."""
        link = self.link
        try:
            if fields.get(b"h", b"").startswith(self._me):
                return  # ours; but the departures of a node we reaped are for us too
            writer, lost, seq, lines = link.seal.open_entry(fields)
            self._replays.check(writer, seq)
        except Rejected as exc:
            link.rejected("entry", str(exc), entry=shown(entry_id))
            return
        if lost == link.node:
            return
        try:
            self._lines(writer, lost or writer, lines, position(entry_id))
        except Exception:  # a bug must not end the reader either
            log.exception("cluster_entry_failed", entry=shown(entry_id))

    def _lines(self, writer: str, node: str, lines: list, at: tuple) -> None:
        """The entry's lines in order; ``at``: its stream position (history.py's seam). A
        first line ``["ts", [TIME, ...]]`` gives the time the writer gave each of its chat
        lines, in order (position.Position); an entry of a writer too old to send it has
        none, and its lines get this node's time."""
        run_room, run, stamps = None, [], []  # consecutive lines for one room: delivered together
        validator, hub = self.link.validator, self.hub
        times, next_time = None, 0
        for item in lines:
            try:
                if item.__class__ is not list or not item or item[0].__class__ is not str:
                    raise Rejected("not a line")
                if item[0] == "r":
                    stamp = None  # (counted before any check: a line dropped keeps its time)
                    if times is not None and item[2:3] and item[2] in CHAT_NAMES:
                        stamp = times[next_time] if next_time < len(times) else None
                        next_time += 1
                    room, event = item[1], validator.event(item[2:])
                    if not validator.is_name(room):
                        raise Rejected(f"bad room name {str(room)[:40]!r}")
                    if event.__class__ not in ROOM_EVENTS:
                        raise Rejected(f"{event.__class__.__name__} is not a room line")
                    self.roster.track(event, room, node)
                    if room != run_room and run:
                        hub.receive_lines(run_room, run, at, stamps, writer)
                        run, stamps = [], []
                    run_room = room
                    run.append(event)
                    stamps.append(stamp)
                    continue
                if run:  # what came before it, first: the batch's order is the senders'
                    hub.receive_lines(run_room, run, at, stamps, writer)
                    run, stamps = [], []
                if item[0] == "ts":
                    times, next_time = stamp_list(item), 0
                    continue
                handler = self.handlers.get(item[0])
                if handler is None:
                    raise Rejected(f"unknown line kind {item[0][:20]!r}")
                handler(writer, item)
            except (Rejected, IndexError) as exc:
                self.link.rejected("line", str(exc) or "too short", node=writer)
        if run:
            hub.receive_lines(run_room, run, at, stamps, writer)

    def _hidden(self, writer: str, item: list) -> None:
        """``["hidden", TEXT]``: a private line ``["to", FOLDED NICK, *EVENT]``, encrypted."""
        try:
            line = json.loads(self.link.seal.reveal(f"{STREAM}/{writer}", item[1]))
        except ValueError:
            raise Rejected("not a private line") from None
        if line.__class__ is not list or len(line) < 3 or line[0] != "to":
            raise Rejected("not a private line")
        event = self.link.validator.event(line[2:])
        if event.__class__ not in _PRIVATE:
            raise Rejected("not a private line")
        self.hub.receive_private(name(line[1]), event)

    def _everyone(self, writer: str, item: list) -> None:
        event = self.link.validator.event(item[1:])
        if event.__class__ is not ev.Announcement:
            raise Rejected("not an operator's line")
        self.hub.receive_broadcast(event)


def _entries(reply) -> list[tuple[bytes, dict]]:
    """``XREAD``'s raw reply (nil, or ``[[stream, [[id, [field, value, ...]], ...]]]``; a
    map ``{stream: [...]}`` under RESP3, which redis-py may negotiate) -> ``[(id, {field:
    value})]``. Redis builds this shape itself, whatever was written into the stream;
    anything else is a broken connection, and raises."""
    if reply is None:
        return []
    [(_, entries)] = reply.items() if reply.__class__ is dict else reply
    return [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in entries]


def position(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (``MS-SEQ``) as a tuple that orders as the stream does."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
