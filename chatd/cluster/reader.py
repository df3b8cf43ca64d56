"""The reader thread: other nodes' entries, opened at the trust boundary and handed on.

It blocks in one ``XREAD`` over the streams it follows, from the last id it handled in each
(so a reconnect resumes exactly there): the shared stream ``chatd:events`` (node hellos,
reaps, reasserts, and everything nodes of the version before write) and each other node's
own stream, never this node's (a node's batches go to its own: reading them back only to
skip them cost a wake-up per batch). A node says at start, in the shared stream, where its
own goes on from (``["streams", ID]``), and a reader that does not follow it yet starts
there; a reader that starts follows the nodes of its snapshot (bus.py). It opens each entry
(codec.py: tag bound to its stream, sequence per writer and stream, size; a bad one is
dropped with one rate-limited ``cluster_entry_rejected`` and the reader goes on: one entry
can never wedge it), and gives each line to the handler of its kind (:attr:`Reader.handlers`,
a table). Consecutive room lines for one room go to the hub together (one room lock for the
run). Lines:

- ``["r", ROOM, *EVENT]`` a room line (EVENT as wire.py encodes it);
- ``["hidden", TEXT]`` a private line ``["to", FOLDED NICK, *EVENT]``, encrypted
  (codec.Seal.hide: whoever reads Redis reads neither the text nor to whom);
  ``["all", *EVENT]`` an operator's line;
- ``["cmd", ...]``, ``["re", ...]``, ``["gather", ...]``: admin routing (routing.py);
- ``["streams", ID]``: the writer's own stream goes on after ID (shared stream only).

Entries this node wrote in the shared stream are skipped, but for the departures of a node it
reaped (``l`` names that node: every node delivers them, this one too); so are the departures
the others announced for this node while they thought it lost (``l`` is this node): its
clients are still here.
"""

from __future__ import annotations

import heapq
import json
import re
import threading

import structlog

from chatd.cluster.checks import name, stamp_list
from chatd.cluster.codec import SHARED, Rejected, Replays, shown
from chatd.cluster.keys import STREAM, node_stream
from chatd.cluster.lane import Lane, bulk, head
from chatd.core import events as ev
from chatd.core.tail import KINDS

log = structlog.get_logger("chatd.cluster")

READ_BLOCK_MS = b"1000"
READ_ENTRIES = 1000  # per stream and XREAD
READ_COUNT = b"%d" % READ_ENTRIES
#: The most streams a reader follows: the shared one and one per other node it has heard of
#: (a hello past it is refused with a warning: docs/protocol.md §3).
MAX_STREAMS = 64
RETRY_SECONDS = 0.5
SHARED_KEY = STREAM.encode()
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
ROOM_EVENTS = frozenset((ev.Said, ev.Acted, ev.Noticed, ev.Tagged, ev.Joined, ev.Left, ev.Quit, ev.Kicked,
                         ev.Renamed, ev.Announcement, ev.TopicSet, ev.RoomKicked, ev.Granted, ev.Revoked,
                         ev.BanSet, ev.BanLifted, ev.ModeSet, ev.RoomRegistered))
#: The room lines a history keeps, by their name on the wire: those a ["ts"] line times.
CHAT_NAMES = frozenset(cls.__name__ for cls in KINDS)


#: What a private line may carry: a /msg (or IRC's TAGMSG), the away answer to one
#: (core/presence.py), an invitation to a room (core/stewardship.py).
_PRIVATE = (ev.PrivateMessage, ev.PrivateTagged, ev.IsAway, ev.InvitedTo)

class Reader:
    def __init__(self, link, roster, routing, stopping) -> None:
        self.link = link
        self.roster = roster
        self.stopping = stopping  # the publisher's stop event: both threads end together
        self.hub = None
        #: The streams this node reads and the last id handled in each: the shared one first,
        #: then each other node's own (keys.node_stream). This thread replaces the dict,
        #: never changes it, so another thread reads one whole (:meth:`streams`).
        self.last_ids: dict[bytes, bytes] = {SHARED_KEY: b"0-0"}
        #: The stream position of the last entry handed on (or skipped) in each stream, for a
        #: join that read history up to a position and must not meet older lines live after
        #: it (caught_up). Replaced by this thread under _progress, which also wakes those
        #: waiting for it.
        self.handled: dict[bytes, tuple] = {}
        self._progress = threading.Condition(threading.Lock())
        self._waiting = 0  # joins waiting in caught_up(), under _progress
        self._me = b"\0"  # the head of this node's own entries (run())
        self._replays = Replays(link.started_at)
        #: Streams a hello of the read being handled named, and where each starts (_streams).
        self._heard: dict[bytes, bytes] = {}
        self._stream = SHARED_KEY  # the stream of the entry being handled
        self._xread = (None, b"")  # (the streams, XREAD packed up to their ids)
        self.handlers = {"hidden": self._hidden, "all": self._everyone, "cmd": routing.obey,
                         "re": routing.answered, "gather": routing.asked,
                         "streams": self._streams}

    def run(self) -> None:
        link = self.link
        self._me = link.node.encode() + b"  "  # our head, lost empty (name settled by now)
        lane = Lane(link.redis)  # this thread's own connection (lane.py: CPU per XREAD)
        try:
            while not self.stopping.is_set():
                last_ids = self.last_ids
                try:
                    reply = lane.call(self._command(last_ids))[0]
                    read = _streams(reply)
                except Exception as exc:
                    link.report(False, exc)
                    if "WRONGTYPE" in str(exc):
                        self._repair(list(last_ids))
                    self.stopping.wait(RETRY_SECONDS)
                    continue
                link.report(True)
                if not read:
                    continue
                moved = dict(last_ids)
                for stream, entry_id, fields in in_order(read, moved):
                    moved[stream] = entry_id
                    self.entry(entry_id, fields, stream)
                for stream, start in self._heard.items():  # hellos of this read
                    moved.setdefault(stream, start)
                self._heard = {}
                self.last_ids = moved
                self._handled({stream: position(i) for stream, i in moved.items()})
        finally:
            lane.close()

    def _command(self, last_ids: dict[bytes, bytes]) -> bytes:
        """XREAD from ``last_ids``: packed once per set of streams but for the ids."""
        streams = tuple(last_ids)
        if self._xread[0] != streams:
            self._xread = (streams, head(6 + 2 * len(streams), b"XREAD", b"COUNT", READ_COUNT,
                                         b"BLOCK", READ_BLOCK_MS, b"STREAMS", *streams))
        return self._xread[1] + b"".join([bulk(i) for i in last_ids.values()])

    def streams(self) -> list[bytes]:
        """The streams read now (any thread: a join's history read asks where each stands)."""
        return list(self.last_ids)

    def start_at(self, ids: dict[bytes, bytes]) -> None:
        """Where reading starts in each stream (the bus's snapshot): everything up to it counts
        as handled."""
        self.last_ids = {SHARED_KEY: ids.get(SHARED_KEY, b"0-0"), **ids}
        self.handled = {stream: position(i) for stream, i in self.last_ids.items()}

    def _handled(self, at: dict[bytes, tuple]) -> None:
        with self._progress:
            self.handled = at
            if self._waiting:
                self._progress.notify_all()

    def caught_up(self, at: dict[bytes, tuple], timeout: float) -> bool:
        """Wait (at most ``timeout``) until every entry up to ``at`` (a position per stream)
        has been handed on. A join reads a room's history from Redis up to each stream's
        newest entry, which this reader may not have handed on yet: without the wait, those
        older lines would reach the joiner live after its replay, twice and out of order.
        Never called on this thread (it would wait for itself)."""
        def passed() -> bool:
            handled = self.handled
            return all(handled.get(stream, (0, 0)) >= p for stream, p in at.items())

        with self._progress:
            self._waiting += 1
            try:
                return self._progress.wait_for(passed, timeout)
            finally:
                self._waiting -= 1

    def entry(self, entry_id, fields, stream: bytes = SHARED_KEY) -> None:
        """One stream entry: opened, then its lines in order. Nothing in it ends the reader."""
        link = self.link
        shared = stream == SHARED_KEY
        try:
            if shared and fields.get(b"h", b"").startswith(self._me):
                return  # ours; but the departures of a node we reaped are for us too
            writer, lost, seq, lines = link.seal.open_entry(fields, SHARED if shared else stream)
            self._replays.check(writer, seq, stream)
        except Rejected as exc:
            link.rejected("entry", str(exc), entry=shown(entry_id))
            return
        if lost == link.node:
            return
        try:
            self._stream = stream
            self._lines(writer, lost or writer, lines, (stream, position(entry_id)))
        except Exception:  # a bug must not end the reader either
            log.exception("cluster_entry_failed", entry=shown(entry_id))

    def _repair(self, streams: list[bytes]) -> None:
        """A key we read that is not a stream (written by someone without the secret) fails
        every XREAD: deleted with a warning, as at start (bus.py _repair_types)."""
        redis = self.link.redis
        try:
            for stream in streams:
                kind = redis.type(stream)
                if kind not in (b"none", b"stream"):
                    self.link.rejected("key", f"{stream.decode()} is a {shown(kind)}, not a stream")
                    redis.delete(stream)
        except Exception as exc:  # the redis client's errors: tried again at the next failure
            self.link.report(False, exc)

    def _lines(self, writer: str, node: str, lines: list, at: tuple) -> None:
        """The entry's lines in order; ``at``: its stream and position in it (the history
        seam: tail.Tail.finish). A
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

    def _streams(self, writer: str, item: list) -> None:
        """``["streams", ID]`` in the shared stream: node ``writer`` writes its own stream from
        after ID on; a stream this reader does not follow yet is followed from there."""
        if self._stream != SHARED_KEY or len(item) != 2 or item[1].__class__ is not str \
                or not _ENTRY_ID.fullmatch(item[1]):
            raise Rejected("not a stream announcement")
        stream = node_stream(writer).encode()
        if stream in self.last_ids or stream in self._heard or writer == self.link.node:
            return  # (one we follow goes on from where we are in it)
        if len(self.last_ids) + len(self._heard) >= MAX_STREAMS:
            raise Rejected(f"more than {MAX_STREAMS} streams")
        self._heard = {**self._heard, stream: item[1].encode()}

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


def in_order(read: list, following: dict):
    """The entries of one XREAD over several streams as (stream, id, fields), in the order
    Redis added them (ids are its clock's milliseconds and a count: a node that saw a line and
    answered it wrote the answer after it, so every node hands the two on in that order, as
    when one stream carried everything; a tie, the shared stream's first). A stream that gave
    a full READ_COUNT may have more before the others' later entries: what is after its last
    one waits for the next read (its id is not passed, so it is read again)."""
    full = [position(entries[-1][0]) for _, entries in read if len(entries) >= READ_ENTRIES]
    upto = min(full) if full else None
    runs = [[(position(entry_id), stream != SHARED_KEY, stream, entry_id, fields)
             for entry_id, fields in entries]
            for stream, entries in read if stream in following]
    merged = runs[0] if len(runs) == 1 else heapq.merge(*runs)
    for at, _, stream, entry_id, fields in merged:
        if upto is not None and at > upto:
            return
        yield stream, entry_id, fields


def _streams(reply) -> list[tuple[bytes, list[tuple[bytes, dict]]]]:
    """``XREAD``'s raw reply (nil, or ``[[stream, [[id, [field, value, ...]], ...]], ...]``;
    a map ``{stream: [...]}`` under RESP3, which redis-py may negotiate) -> ``[(stream,
    [(id, {field: value})])]``. Redis builds this shape itself, whatever was written into
    the stream; anything else is a broken connection, and raises."""
    if reply is None:
        return []
    return [(stream, [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in entries])
            for stream, entries in (reply.items() if reply.__class__ is dict else reply)]


def position(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (``MS-SEQ``) as a tuple that orders as the stream does."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
