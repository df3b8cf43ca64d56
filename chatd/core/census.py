"""What the hub's state adds up to: counts, totals, listings (chatctl status and list, /who,
/rooms, /metrics, the watchdog's lock probe), and the totals an upgrade carries over.

A mixin of :class:`~chatd.core.hub.Hub`, kept apart because nothing here changes the chat:
each view copies what it needs under the hub lock and does the rest after.
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

from chatd.core.bus import ClusterUnavailable
from chatd.text import fold

_COUNTERS = ("lines_in", "lines_out", "bytes_in", "bytes_out")
#: Departures WHOWAS remembers (docs/protocol.md §3): about 100 bytes each.
MAX_GONE = 1000


def _traffic(client) -> tuple[int, int, int, int]:
    outbox = client.outbox
    return client.lines_in, outbox.lines_out, client.bytes_in, outbox.bytes_out


def _member(state, client_id, nick: str, account, away) -> tuple:
    """(nick, operator, voiced, away) in a room of ``state`` (roomstate.RoomState)."""
    return nick, state.is_op(client_id, nick, account), state.is_voiced(nick, account), away


def _marked(nick: str, op: bool, voiced: bool, away) -> str:
    """A member (:func:`_member`) as /who shows it."""
    if op:
        nick = "@" + nick
    elif voiced:
        nick = "+" + nick
    return f"{nick} (away)" if away is not None else nick


class Row(NamedTuple):
    """One client as :meth:`Census.snapshot` copies it: plain values, read under the hub lock
    so that nick and rooms agree with each other."""

    id: int
    nick: str
    peer: str
    ip: str
    room: str | None  # its current room (None for a moment while it moves)
    muted: bool
    connected_at: float
    last_active: float
    bytes_in: int
    lines_in: int
    bytes_out: int
    lines_out: int
    sendq: int
    rooms: tuple[str, ...]  # every room it is in, the current one among them
    account: str | None
    protocol: str  # what it speaks (core/protocol.py: "line", "irc")
    names: tuple[str, str] = ("", "")  # an IRC client's user name and real name (USER)


class Census:
    """Read-only views of the hub's maps (``_clients``, ``_rooms``, the departed counts)."""

    def _count_departure(self, client, reason) -> None:
        """A client leaves (hub lock held): its input and messages join the lifetime totals
        (its output is counted by the flusher when it closes the socket), and ``reason`` (an
        closing.Close, or None) the disconnects by kind."""
        self._departed["lines_in"] += client.lines_in
        self._departed["bytes_in"] += client.bytes_in
        self._departed_messages["room"] += client.room_messages
        self._departed_messages["private"] += client.private_messages
        if client.nick:  # (WHOWAS: who held the nick before)
            self._gone.appendleft((client.nick, client.username or client.nick,
                                   client.realname or client.nick, time.time()))
        if reason is not None:
            self._disconnects[reason.kind] = self._disconnects.get(reason.kind, 0) + 1

    def whowas(self, nick: str, count: int = 0) -> list[tuple[str, str, str, float]]:
        """Who held ``nick`` before, newest first: (nick, user name, real name, when it left),
        at most ``count`` (0: all kept). This node keeps its last :data:`MAX_GONE`
        departures, the oldest forgotten first; the cluster its own (the bus: Redis is asked
        outside the hub lock, and while it cannot be, this node's are the answer)."""
        key = fold(nick)
        with self._lock:
            found = [entry for entry in self._gone if fold(entry[0]) == key]
        try:
            elsewhere = self._bus.whowas(nick)
        except ClusterUnavailable:
            elsewhere = []
        if elsewhere:
            found = sorted(found + elsewhere, key=lambda entry: entry[3], reverse=True)
        return found[:count] if count > 0 else found

    def users(self) -> tuple[int, int]:
        """(users now, the most at once since start): clients with a nick (an IRC client
        that has not registered yet is none), for IRC's LUSERS."""
        with self._lock:
            return len(self._nicks), self._peak

    def _note_users(self) -> None:
        """(hub lock held) A client got its first nick: the peak may grow."""
        if len(self._nicks) > self._peak:
            self._peak = len(self._nicks)

    def client_count(self) -> int:
        """Clients admitted (stats() without walking them: for /health)."""
        with self._lock:
            return len(self._clients)

    def stats(self) -> dict:
        with self._lock:
            totals = dict(self._departed, lines_out=self._flusher.closed_lines_out,
                          bytes_out=self._flusher.closed_bytes_out)
            for client in self._clients.values():
                for key, value in zip(_COUNTERS, _traffic(client)):
                    totals[key] += value
            return {"clients": len(self._clients), "rooms": len(self._rooms), **totals}

    def counters(self) -> dict:
        """What a metrics scrape reads (metrics.py): the totals of :meth:`stats`, plus
        ``room_messages`` and ``private_messages`` (chat messages sent), ``disconnects``
        (Close kind -> count), ``sendq_bytes`` (output queued for every client),
        ``sendq_max_bytes`` (the fullest queue) and ``protocols`` (clients by protocol).

        The hub lock is held only to copy the client list and three small values; the sums
        over the clients are taken after, from plain int attributes (atomic reads). A client
        that leaves meanwhile is counted as it was at the copy, so a total may come out a
        little off for one scrape (metrics.py keeps counters from going backwards).
        """
        flusher = self._flusher
        # before the copy: the flusher closes a client only after it has left the hub, so
        # none is counted twice; one that left just before the copy and is closed just after
        # this read is in neither for one scrape
        lines_out, bytes_out = flusher.closed_lines_out, flusher.closed_bytes_out
        with self._lock:
            clients = list(self._clients.values())
            rooms = len(self._rooms)
            departed = dict(self._departed)
            room_messages, private_messages = self._departed_messages.values()
            disconnects = dict(self._disconnects)
        lines_in, bytes_in = departed["lines_in"], departed["bytes_in"]
        backlog = largest = 0
        protocols: dict[str, int] = {}
        for client in clients:
            outbox = client.outbox
            name = outbox.protocol.name
            protocols[name] = protocols.get(name, 0) + 1
            lines_in += client.lines_in
            bytes_in += client.bytes_in
            room_messages += client.room_messages
            private_messages += client.private_messages
            lines_out += outbox.lines_out
            bytes_out += outbox.bytes_out
            queued = outbox.queued
            backlog += queued
            if queued > largest:
                largest = queued
        return {"clients": len(clients), "rooms": rooms, "lines_in": lines_in,
                "lines_out": lines_out, "bytes_in": bytes_in, "bytes_out": bytes_out,
                "room_messages": room_messages, "private_messages": private_messages,
                "disconnects": disconnects, "sendq_bytes": backlog, "sendq_max_bytes": largest,
                "protocols": protocols}

    def who(self, client) -> tuple[str, list[str]]:
        """The members of ``client``'s room, on every node: ``@nick`` an operator, ``+nick``
        voiced, ``nick (away)`` away (SPEC §13)."""
        name, members = self.members_of(client.room.name)
        return name, [_marked(*member) for member in members]

    def members_of(self, name: str) -> tuple[str, list[tuple]]:
        """Room ``name`` (as spelled) and its members on every node, by nick, each as
        (nick, operator, voiced, away text or None); none if nobody is in it here. Another
        node's member is known by its nick alone: taken as its account too (a registered
        nick is held by its account only)."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None:
                return name, []
            state = room.state
            shown = {c.nick: _member(state, c.id, c.nick, c.account, c.away)
                     for c in room.members.values()}
        remote = self._bus.remote_members(room.name)
        nicks = sorted([*shown, *remote], key=fold)
        return room.name, [shown.get(nick) or _member(state, None, nick, nick,
                                                      self._bus.remote_away(nick))
                           for nick in nicks]

    def rooms(self) -> list[tuple[str, int]]:
        """Every room with its member count, on every node."""
        counts = dict(self._bus.remote_rooms())  # folded name -> (name, count)
        with self._lock:
            for key, (name, state) in self._shared.items():  # registered: exist while empty
                if state.registered and key not in counts:
                    counts[key] = (name, 0)
            for key, room in self._rooms.items():
                name, remote = counts.get(key, (room.name, 0))
                counts[key] = (room.name, remote + len(room.members))
        return sorted(counts.values(), key=lambda item: fold(item[0]))

    def listing(self) -> list[tuple[str, int, str]]:
        """``/list``: :meth:`rooms` with each room's topic ("" if none): the room's here,
        or the cluster's for a room with no member on this node (stewardship.py)."""
        with self._lock:
            topics = {key: state.topic for key, (_, state) in self._shared.items()}
            topics.update((key, room.state.topic) for key, room in self._rooms.items())
        return [(name, count, topics.get(fold(name), "")) for name, count in self.rooms()]

    def responsive(self, timeout: float) -> bool:
        """Whether the lock can be had within ``timeout`` (the watchdog's deadlock check)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    def clients(self) -> list:
        with self._lock:
            return list(self._clients.values())

    def snapshot(self, room_name: str | None = None) -> list[Row] | None:
        """Every client (or one room's members) as :class:`Row`, by id. None: there is no
        such room."""
        with self._lock:
            if room_name is None:
                clients = self._clients.values()
            else:
                room = self._rooms.get(fold(room_name.lstrip("#")))
                if room is None:
                    return None
                clients = room.members.values()
            rows = [Row(c.id, c.nick, c.peer, c.ip, c.room.name if c.room is not None else None,
                        c.muted, c.connected_at, c.last_active, c.bytes_in, c.lines_in,
                        c.outbox.bytes_out, c.outbox.lines_out, c.outbox.queued,
                        tuple(r.name for r in c.rooms), c.account, c.outbox.protocol.name,
                        (c.username, c.realname))
                    for c in clients]
        rows.sort()
        return rows

    def handover_totals(self) -> dict:
        """What the next process needs besides the clients themselves: for an upgrade every
        session is parked, for the fd store's running state (fdstore.py) this is a moment's."""
        with self._lock:
            guest_next = next(self._guest_numbers)
            self._guest_numbers = itertools.count(guest_next)  # taken back: we may serve on
            return {"guest_next": guest_next, "departed": dict(self._departed),
                    "departed_messages": dict(self._departed_messages),
                    "rooms": self._handed_rooms()}

    def resume_totals(self, state: dict) -> None:
        """Go on from :meth:`handover_totals` of the process before the upgrade."""
        with self._lock:
            self._guest_numbers = itertools.count(int(state["guest_next"]))
            self._departed.update(state["departed"])
            self._departed_messages.update(state.get("departed_messages", {}))  # since 13
