"""A room's fan-out on the flusher's side: what the flusher thread runs for a room, the other
half of rooms.py's :class:`~chatd.core.rooms.Room` (a mixin, as freeze.py is the flusher's).

rooms.py says who may touch what. In short: the work here runs on the flusher thread, in
the order the room queued it (``flusher.call``); ``readers`` is that thread's alone; the log,
its renders and the barriers are read under the room's ``lock``, and nothing under it does
socket I/O: ``flusher.deliver(outbox, data, lines)`` sends or backlogs, never blocks.
"""

from __future__ import annotations

from chatd.core.ignoring import hides
from chatd.core.once import Except


class Flushing:
    """The flusher thread's methods of a Room (rooms.py): its flush, a reader's catch-up,
    attach and detach as the flusher's queue reaches them, and trimming the log."""

    __slots__ = ()

    def flush(self) -> None:
        """Hand every reader what was posted since its offset: one buffer per group of readers
        at one offset speaking one protocol (and, for readers that ignore someone, ignoring
        the same nicks: twenty members ignoring one spammer share one filtered buffer)."""
        with self.lock:
            self.queued = False
            base, log, end = self.base, self.log, self._end()
            stops = {outbox: ends[0] for outbox, ends in self.barriers.items()}
            plain = self.plain_since, self.plain_protocol
            ignorers = set(self.ignorers) if self.ignorers else None
        groups: dict[tuple, list] = {}
        filtered: dict[tuple, list] = {}  # the same, with the ignore list in the key
        for outbox, offset in self.readers.items():
            stop = stops.get(outbox, end)
            if offset < stop:
                if ignorers is not None and outbox in ignorers:
                    filtered.setdefault((offset, stop, outbox.speaks, outbox.ignoring),
                                        []).append(outbox)
                else:
                    groups.setdefault((offset, stop, outbox.speaks), []).append(outbox)
        for (offset, stop, protocol), outboxes in groups.items():
            self._hand(log[offset - base:stop - base], offset, stop, protocol, plain, outboxes)
        for (offset, stop, protocol, ignoring), outboxes in filtered.items():
            self._hand(log[offset - base:stop - base], offset, stop, protocol, plain, outboxes,
                       ignoring)
        self._trim()

    def _hand(self, entries: list, offset: int, stop: int, protocol, plain: tuple,
              outboxes: list, ignoring: frozenset | None = None) -> None:
        """One group's buffer: ``entries`` (from ``offset``; only the flusher drops entries,
        so the slice taken outside the lock stays valid) in ``protocol``, without the lines
        of nicks in ``ignoring``, to every reader in ``outboxes`` but their own lines."""
        readers = self.readers
        for outbox in outboxes:
            readers[outbox] = stop
        if protocol is not plain[1] or offset < plain[0]:
            entries = self._in(protocol, entries, offset)
        if ignoring:
            entries = [e for e in entries if not hides(ignoring, e[1])]
            if not entries:
                return
        authors = {e[0] for e in entries}
        for author in authors:
            if author.__class__ is Except:  # a line some members had elsewhere (once.py)
                authors = _widened(authors)
                break
        for outbox in authors.intersection(outboxes):
            self._deliver_except(outbox, entries)
        # no per-flush copy of a 10,000-reader group: allocations that size stay in RSS
        data = b"".join([e[2] for e in entries])
        if data:  # (empty: lines this protocol does not show, as IRC's TAGMSG to line clients)
            self._flusher.deliver_many(outboxes, authors, data, len(entries))

    def catch_up(self, outbox, end: int) -> None:
        """One reader gets what was posted from its offset up to ``end``."""
        offset = self.readers.get(outbox)
        if offset is None or offset >= end:
            return
        with self.lock:
            entries = self.log[offset - self.base:end - self.base]
            plain = self.plain_since, self.plain_protocol
        self.readers[outbox] = end
        self._deliver_except(outbox, self._texts(outbox, entries, offset, plain))

    def _texts(self, outbox, entries: list, offset: int, plain: tuple) -> list:
        """``entries`` (from ``offset``) with their texts in ``outbox``'s protocol."""
        if outbox.speaks is not plain[1] or offset < plain[0]:
            return self._in(outbox.speaks, entries, offset)
        return entries

    def add_reader(self, outbox, offset: int) -> None:
        with self.lock:
            _pop_first(self.joining, outbox)
        self.readers[outbox] = offset

    def remove_reader(self, outbox, end: int) -> None:
        self.catch_up(outbox, end)
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
                if self.renders:
                    for offset in [o for o in self.renders if o < low]:
                        del self.renders[offset]

    def _in(self, protocol, entries: list, offset: int) -> list:
        """``entries`` (from ``offset``) as entries whose text is in ``protocol``: from the
        render table, or rendered now for a protocol whose first member joined after the
        line was posted (the flusher thread; the table is the room lock's)."""
        render = protocol.renderer(self.name)
        with self.lock:
            renders = self.renders
            texts = []
            for index, entry in enumerate(entries, offset):
                if entry[3] is protocol:
                    texts.append(entry)
                    continue
                others = renders.setdefault(index, {})
                text = others.get(protocol)
                if text is None:
                    text = others[protocol] = render(entry[1])
                texts.append((entry[0], entry[1], text, protocol))
        return texts

    def _deliver_except(self, outbox, entries) -> None:
        """``entries`` (their texts in ``outbox``'s protocol) but those ``outbox`` wrote and
        those of nicks it ignores."""
        ignoring = outbox.ignoring
        others = [e[2] for e in entries if e[0] is not outbox
                  and not (e[0].__class__ is Except and outbox in e[0])
                  and not (ignoring and hides(ignoring, e[1]))]
        data = b"".join(others)
        if data:
            self._flusher.deliver(outbox, data, len(others))


def _widened(authors: set) -> set:
    """``authors`` with each Except's outboxes in it: every reader a flush must hand a
    buffer of its own (without its lines, or those it had in another room)."""
    widened = set()
    for author in authors:
        if author.__class__ is Except:
            widened.update(author)
        else:
            widened.add(author)
    return widened


def _pop_first(table: dict, outbox) -> None:
    queue = table[outbox]
    del queue[0]
    if not queue:
        del table[outbox]
