"""The publisher thread: what this node tells the cluster, sent in one transaction per batch.

The hub queues (``line``, ``write``: list appends under ``_lock``, never I/O, safe under the
hub lock and a room lock); only the first item of a batch wakes the thread, which lets the
batch gather for PUBLISH_LINGER, then sends it all in one MULTI/EXEC: the stream entry (a
sealed batch of lines, one XADD to this node's own stream, which every other node reads and
this one does not), the member records and the history lines of the same batch. The Redis work per message is O(1) per node, never per recipient. While Redis is away
everything is kept, in order, and tried again every RETRY_SECONDS (docs/cluster.md: an
outage loses no line). The thread also renews this node's lease (leases.py) when it is due.

A history element is read back by :func:`history_entries`, beside the code that writes it.

``_lock`` guards ``_outgoing`` and ``_first_at``; it is taken after the hub lock, never before.
"""

from __future__ import annotations

import threading
import time

import structlog

from chatd.cluster import wire
from chatd.cluster.checks import node_name
from chatd.cluster.codec import WRITE_ENTRY_BYTES, Rejected
from chatd.cluster.departures import MAX_DEPARTURES, element
from chatd.cluster.keys import HISTORY, MEMBERS, STREAM_LENGTH, WHOWAS, node_stream
from chatd.cluster.lane import Lane, bulk, head, pack, transaction
from chatd.cluster.link import scrub
from chatd.core.tail import KINDS, Entry

log = structlog.get_logger("chatd.cluster")

RETRY_SECONDS = 0.5
#: How long the publisher lets a batch gather after its first line (as Kafka's linger.ms):
#: each batch is one transaction here, one XADD in Redis, one wake-up of every other node's
#: reader and one flush there, so fewer, larger batches cost every process less per line
#: (bench/README.md, cluster).
PUBLISH_LINGER = 0.001
#: How long the replies of a batch may wait to be read when no batch follows it.
SETTLE_SECONDS = 0.005
#: The most of one room's history lines a history list element holds (characters).
HISTORY_CHUNK_BYTES = 64 * 1024
#: What the bus queues besides lines and member records, as Redis commands.
WRITES = {"hset": b"HSET", "hdel": b"HDEL", "delete": b"DEL"}
C_FIELD = bulk(b"c")


def xadd_head(stream: bytes) -> bytes:
    """A stream entry's XADD to ``stream`` up to its head field's value: packed once (every
    batch has one; packing each argument anew cost this thread 4 us a batch)."""
    return head(10, b"XADD", stream, b"MAXLEN", b"~", b"%d" % STREAM_LENGTH, b"*", b"h")


class Publisher:
    def __init__(self, link, history_lines: int) -> None:
        self.link = link
        self.history_lines = history_lines
        self._lock = threading.Lock()
        # ("line", (JSON text, (room key, history record, its time) or None)), ("member", (owner,
        # record)), ("whowas", departures.departure(...)), or (pipeline method, args)
        self._outgoing: list = []
        self._first_at = 0.0
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._stop_by = 0.0
        self.renew_at = 0.0  # monotonic time of the next lease renewal (this thread)
        self.keep_alive = None  # leases.Leases.keep_alive, set by the bus
        self._lane: Lane | None = None  # this thread's connection for its batches (_transmit)
        #: This node's own stream (keys.node_stream: every other node reads it, this one
        #: never does), and its XADD packed up to the head's value; set at the first batch
        #: (the node's name is settled by then).
        self._stream = ""
        self._stream_key = b""  # the same, as the bytes an entry's tag is bound to
        self._xadd = b""
        #: The transaction sent last, until its replies are read (_settle): (the key of each
        #: command, how many replies, its bytes), or None.
        self._sent: tuple | None = None
        #: Redis failed us before ``_sent``'s replies were read: it may have been written.
        #: It goes again byte for byte, its stream entry with the same sequence, so a reader
        #: that has it drops the copy as a replay (codec.Replays) and one that has not takes it.
        self._unsure = False

    def line(self, text: str, keep: tuple | None = None) -> None:
        """Queue one stream line (JSON text) and the history record that goes with it."""
        self.write(("line", (text, keep)))

    def write(self, item: tuple) -> None:
        """Only the first item of a batch wakes the publisher (it takes them all at once)."""
        with self._lock:
            first = not self._outgoing
            if first:
                self._first_at = time.monotonic()
            self._outgoing.append(item)
        if first:
            self._wake.set()

    def stop(self, timeout: float) -> None:
        self._stop_by = time.monotonic() + timeout
        self.stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Wait for a batch's first item, let the batch gather for PUBLISH_LINGER, send it.
        The replies of a batch are read when the next one goes (they are in by then), or
        SETTLE_SECONDS after it if none does: a batch under steady traffic costs this thread
        two wake-ups (the first line, the linger), not three (and the replies)."""
        retry_at = 0.0
        while True:
            now = time.monotonic()
            if self.stopping.is_set():
                timeout = RETRY_SECONDS / 5
            elif self._sent is not None:
                timeout = SETTLE_SECONDS
            else:
                timeout = max(0.0, max(retry_at, min(self.renew_at, now + 1)) - now)
            self._wake.wait(timeout)
            self._wake.clear()
            linger = self._first_at + PUBLISH_LINGER - time.monotonic()
            if linger > 0 and not self.stopping.is_set():
                time.sleep(linger)  # the batch gathers what else comes meanwhile
            now = time.monotonic()
            if self.stopping.is_set() and (not self._outgoing or now >= self._stop_by):
                if self._sent is not None and now < self._stop_by:
                    self._cycle()  # (the last batch's replies: whether it went)
                if self._lane is not None:
                    self._lane.close()
                return
            if now >= retry_at and not self._cycle():
                retry_at = time.monotonic() + RETRY_SECONDS

    def _cycle(self) -> bool:
        """Read the replies of the batch sent last, then send what is queued; False if Redis
        failed us (what is not known to be written goes again, in order: see ``_unsure``)."""
        taken: list = []
        try:
            if time.monotonic() >= self.renew_at:
                self.keep_alive()
            if self._unsure:
                self._transmit(self._sent[2])
                self._unsure = False
            with self._lock:
                taken, self._outgoing = self._outgoing, []
            if self._sent is not None:
                self._settle(*self._sent[:2])
                self._sent = None
            if taken:
                self._sent, taken = self._pack(taken), []  # from here on: this transaction
                self._transmit(self._sent[2])
            self.link.report(True)
            return True
        except Exception as exc:
            with self._lock:
                self._outgoing[:0] = taken  # not packed yet: before whatever came meanwhile
            self._unsure = self._sent is not None
            if self._lane is not None:
                self._lane.close()  # (replies half read: the next batch starts afresh)
            self.link.report(False, exc)
            return False

    def _transmit(self, packed: bytes) -> None:
        if self._lane is None:
            self._lane = Lane(self.link.redis)
        self._lane.send(packed)

    def _pack(self, batch: list) -> tuple[list, int, bytes]:
        """One transaction (MULTI) for the whole batch, to be written through this thread's
        lane (lane.py: redis-py's pipeline cost more CPU than the round trip): the key of
        each command and how many replies come back, for :meth:`_settle`, and its bytes.
        Redis runs every command of it even if one fails, so a failure is sorted out there
        (:meth:`_failed`), not retried whole: that would send the lines that did go out a
        second time."""
        seal = self.link.seal
        origin = "@" + self.link.node  # whose lines a history element holds (position.Position)
        if not self._stream:
            self._stream = node_stream(self.link.node)
            self._stream_key = self._stream.encode()
            self._xadd = xadd_head(self._stream_key)
        stream = self._stream
        lines, stamps, by_room = [], [], {}
        commands, keys = [], []  # keys: the key of each command, in order
        departed = False
        # (per batch, on this thread: at a paced load a batch is a line or two, so what a
        # batch costs whatever its size is most of a line's cost here; issue 28)
        for method, args in batch:
            if method == "line":
                text, keep = args
                lines.append(text)
                if keep is not None:  # history: in the transaction of the entry carrying it
                    records = by_room.get(keep[0])
                    if records is None:
                        by_room[keep[0]] = [keep[1]]
                    else:
                        records.append(keep[1])
                    stamps.append(keep[2])
                else:
                    stamps.append(None)
            elif method == "member":  # sealed here, on this thread, not under the hub lock
                owner, record = args
                commands.append(_command(b"HSET", MEMBERS, owner,
                                         seal.seal_hidden(f"{MEMBERS}/{owner}", record)))
                keys.append(MEMBERS)
            elif method == "whowas":  # (departures.py: sealed here too)
                commands.append(_command(b"LPUSH", WHOWAS, element(seal, *args)))
                keys.append(WHOWAS)
                departed = True
            else:  # ("hset" | "hdel" | "delete", (key, ...))
                commands.append(_command(WRITES[method], *args))
                keys.append(args[0])
        if departed:  # one trim a batch, however many left
            commands.append(_command(b"LTRIM", WHOWAS, 0, MAX_DEPARTURES - 1))
            keys.append(WHOWAS)
        if by_room:  # LTRIM's last two arguments
            trim = bulk(b"%d" % -self.history_lines) + bulk(b"-1")
        for room_key, records in by_room.items():  # one RPUSH per room per batch, in order
            key = HISTORY + room_key
            key_bytes = key.encode()
            # one element per batch and room, not per line: a tag and a Redis argument
            # per line cost 1.7 us of this thread's CPU at full speed (docs/cluster.md);
            # lines are joined by LF (a record has none: its event is JSON)
            commands.append(pack(b"RPUSH", key_bytes, *[
                seal.seal(key, "\n".join([origin, *run])).encode()
                for run in _runs(records, HISTORY_CHUNK_BYTES)]))
            commands.append(b"*4\r\n$5\r\nLTRIM\r\n" + bulk(key_bytes) + trim)
            keys += (key, key)
        start = 0
        for run in _runs(lines, WRITE_ENTRY_BYTES):
            times = [t for t in stamps[start:start + len(run)] if t is not None]
            start += len(run)
            # the times of its history lines, in order, first (reader.py: Position)
            head = '[["ts",' + _times(times) + "]," if times else "["
            fields = self.link.entry(head + ",".join(run) + "]", stream=self._stream_key)
            commands.append(b"".join((self._xadd, bulk(fields["h"].encode()), C_FIELD,
                                      bulk(fields["c"].encode()))))
            keys.append(stream)
        packed, replies = transaction(commands)
        return keys, replies, packed

    def _settle(self, keys: list, replies: int) -> None:
        """Read the replies of the batch sent last (``keys``: the key of each of its
        commands); raises if its stream entry failed."""
        results = self._lane.read(replies)[-1] or []
        failed = [(key, r) for key, r in zip(keys, results) if isinstance(r, Exception)]
        if failed:
            self._failed(failed)

    def _failed(self, failed: list) -> None:
        """A key of the wrong type (someone without the secret wrote it) is deleted with a
        warning; any other failure is logged. If the stream entry itself failed, no line
        went out: the batch is tried again (raised). If it did go out, it is not."""
        for key, error in failed:
            if "WRONGTYPE" in str(error):
                self.link.rejected("key", f"{key}: {error}")
                self.link.redis.delete(key)
            else:
                log.warning("cluster_write_failed", key=key,
                            error=scrub(str(error), self.link.url)[:200])
        for key, error in failed:
            if key == self._stream:
                raise error


def history_entries(link, room_key: str, value) -> list:
    """One history list element as :meth:`Publisher._pack` writes it (``@NODE``, the node
    whose lines they are, then its lines, joined by LF, one tag) read back as Entries: what
    fails its check is skipped with a warning (the whole element if its tag does)."""
    try:
        records = link.seal.open(HISTORY + room_key, value).split("\n")
        origin = node_name(records.pop(0)[1:]) if records[0].startswith("@") else ""
    except Rejected as exc:
        link.rejected("history", str(exc), room=room_key)
        return []
    entries = []
    for record in records:
        try:
            ts, shown, event = link.validator.history(record)
        except Rejected as exc:
            link.rejected("history", str(exc), room=room_key)
            continue
        entries.append(Entry(ts, shown, KINDS[event.__class__], event.nick, event.text, origin))
    return entries


def _command(*args) -> bytes:
    """One queued write as RESP (bytes as they are, anything else as its text)."""
    return pack(*[a if a.__class__ is bytes else str(a).encode() for a in args])


def _times(times: list) -> str:
    """``wire.compact(times)`` for a list of floats (what the history's times are), without
    the JSON encoder's machinery: JSON writes a finite float as ``float.__repr__`` does."""
    if all(t.__class__ is float and t - t == 0.0 for t in times):  # (t - t: NaN for inf, NaN)
        return "[" + ",".join([float.__repr__(t) for t in times]) + "]"
    return wire.compact(times)


def _runs(texts: list[str], limit: int):
    """:func:`_chunks`, with the common case (everything fits in one run) in C."""
    if sum(map(len, texts)) + len(texts) <= limit:
        return (texts,) if texts else ()
    return _chunks(texts, limit)


def _chunks(texts: list[str], limit: int):
    """``texts`` in order, as runs of about ``limit`` characters at most (one text over it is
    a run of its own). Characters, not bytes: readers take 4 times the limit in bytes, so
    UTF-8 never pushes a run past what they accept."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        if size + len(text) + 1 > limit and i > start:
            yield texts[start:i]
            start, size = i, 0
        size += len(text) + 1
    if start < len(texts):
        yield texts[start:]
