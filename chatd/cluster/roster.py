"""The other nodes' members, as this node last heard of them: what ``/who``, ``/rooms`` and
``/msg`` ask about (hub.py, under the hub lock: no I/O here).

Filled at start from the member records (bus.py) and kept in step by the reader thread with
the joins, departures and renames the other nodes announce. ``_lock`` guards ``_remote``
(folded nick -> (nick, room, node)); it is taken after the hub lock, never before.
"""

from __future__ import annotations

import threading

from chatd.core import events as ev
from chatd.text import fold

_CHAT = (ev.Said, ev.Acted, ev.Announcement)


class Roster:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remote: dict[str, tuple[str, str, str]] = {}

    def __len__(self) -> int:
        return len(self._remote)

    def add(self, nick: str, room: str, node: str) -> None:
        with self._lock:
            self._remote[fold(nick)] = (nick, room, node)

    def track(self, event, room: str, node: str) -> None:
        """One room line from ``node``: a join, departure or rename changes the table."""
        if event.__class__ in _CHAT:
            return  # the common case: a line, no change of membership
        with self._lock:
            if event.__class__ is ev.Joined:
                self._remote[fold(event.nick)] = (event.nick, room, node)
            elif event.__class__ in (ev.Left, ev.Kicked):
                self._forget(event.nick, node)
            elif event.__class__ is ev.Renamed:
                self._forget(event.old, node)
                self._remote[fold(event.new)] = (event.new, room, node)

    def _forget(self, nick: str, node: str) -> None:
        """Drop ``nick`` if ``node`` holds it here (``_lock`` held): after a nick was revoked
        the same nick may have meant another node's client."""
        entry = self._remote.get(fold(nick))
        if entry is not None and entry[2] == node:
            del self._remote[fold(nick)]

    def members(self, room: str) -> list[str]:
        key = fold(room)
        with self._lock:
            return [nick for nick, where, _ in self._remote.values() if fold(where) == key]

    def rooms(self) -> dict[str, tuple[str, int]]:
        counts: dict[str, tuple[str, int]] = {}
        with self._lock:
            for _, room, _ in self._remote.values():
                name, count = counts.get(fold(room), (room, 0))
                counts[fold(room)] = (name, count + 1)
        return counts

    def nick(self, nick: str) -> str | None:
        with self._lock:
            entry = self._remote.get(fold(nick))
        return entry[0] if entry else None
