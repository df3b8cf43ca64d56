"""The other nodes' members, as this node last heard of them: what ``/who``, ``/rooms`` and
``/msg`` ask about (hub.py, under the hub lock: no I/O here).

Filled at start from the member records (bus.py) and kept in step by the reader thread with
the joins, departures and renames the other nodes announce. ``_lock`` guards ``_remote``
(folded nick -> (nick, folded room -> room, node)): a client may be in several rooms, and is
forgotten when it has left the last; and ``_away`` (folded nick -> away text, for members in
``_remote`` only: ``/who`` marks them, SPEC §13). It is taken after the hub lock, never
before.
"""

from __future__ import annotations

import threading

from chatd.core import events as ev
from chatd.core.membership import MAX_ROOMS
from chatd.text import fold

_CHAT = (ev.Said, ev.Acted, ev.Noticed, ev.Announcement, ev.Tagged)


class Roster:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remote: dict[str, tuple[str, dict[str, str], str]] = {}
        self._away: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._remote)

    def add(self, nick: str, rooms, node: str, away: str | None = None) -> None:
        """``nick`` of ``node`` in ``rooms`` (names), as its member record says."""
        with self._lock:
            self._remote[fold(nick)] = (nick, {fold(room): room for room in rooms}, node)
        self.set_away(nick, away, node)

    def set_away(self, nick: str, text: str | None, node: str) -> None:
        """``nick`` of ``node`` is away (``text``) or back (None); kept only for a member
        this roster knows on that node (so at most one text per member)."""
        key = fold(nick)
        with self._lock:
            entry = self._remote.get(key)
            if text is not None and entry is not None and entry[2] == node:
                self._away[key] = text
            else:
                self._away.pop(key, None)

    def away(self, nick: str) -> str | None:
        with self._lock:
            return self._away.get(fold(nick))

    def track(self, event, room: str, node: str) -> None:
        """One room line from ``node``: a join, departure or rename changes the table."""
        if event.__class__ in _CHAT:
            return  # the common case: a line, no change of membership
        with self._lock:
            if event.__class__ is ev.Joined:
                self._enter(event.nick, room, node)
            elif event.__class__ in (ev.Left, ev.Quit, ev.Kicked, ev.RoomKicked):
                self._leave(event.nick, room, node)
            elif event.__class__ is ev.Renamed:
                entry = self._remote.get(fold(event.old))
                if entry is not None and entry[2] == node:
                    del self._remote[fold(event.old)]
                    self._remote[fold(event.new)] = (event.new, entry[1], node)
                    away = self._away.pop(fold(event.old), None)
                    if away is not None:
                        self._away[fold(event.new)] = away
                self._enter(event.new, room, node)  # a rename is said in each of its rooms

    def _enter(self, nick: str, room: str, node: str) -> None:
        """``nick`` of ``node`` is in ``room`` too; a client is in at most MAX_ROOMS rooms, and
        joins past that (a node of another kind, a bug) are not kept."""
        entry = self._remote.get(fold(nick))
        if entry is None or entry[2] != node or entry[0] != nick:
            entry = self._remote[fold(nick)] = (nick, {}, node)
        if len(entry[1]) < MAX_ROOMS:
            entry[1][fold(room)] = room

    def _leave(self, nick: str, room: str, node: str) -> None:
        """``nick`` left ``room``; forgotten once in no room, and only if ``node`` holds it
        here (``_lock`` held): after a nick was revoked the same nick may have meant another
        node's client."""
        entry = self._remote.get(fold(nick))
        if entry is None or entry[2] != node:
            return
        entry[1].pop(fold(room), None)
        if not entry[1]:
            del self._remote[fold(nick)]
            self._away.pop(fold(nick), None)

    def rooms_of(self, nick: str, node: str) -> list[str]:
        """The rooms ``nick`` of ``node`` is in, as far as this roster knows."""
        with self._lock:
            entry = self._remote.get(fold(nick))
            return list(entry[1].values()) if entry is not None and entry[2] == node else []

    def members(self, room: str) -> list[str]:
        key = fold(room)
        with self._lock:
            return [nick for nick, rooms, _ in self._remote.values() if key in rooms]

    def rooms(self) -> dict[str, tuple[str, int]]:
        counts: dict[str, tuple[str, int]] = {}
        with self._lock:
            for _, rooms, _ in self._remote.values():
                for key, room in rooms.items():
                    name, count = counts.get(key, (room, 0))
                    counts[key] = (name, count + 1)
        return counts

    def nick(self, nick: str) -> str | None:
        with self._lock:
            entry = self._remote.get(fold(nick))
        return entry[0] if entry else None
