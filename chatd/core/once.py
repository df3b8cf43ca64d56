"""A line about a person, not a room (a rename, a quit, a kick off the server), reaches each
member once, however many of that person's rooms it shares.

Such a line is posted to each of its subject's rooms, so that every room's members, history
and other nodes learn of it in order with the room's other lines. A member of several of
those rooms (an IRC client: the line protocol's clients are in one room) would read it once per
shared room, and IRC clients show a ``NICK`` or a ``QUIT`` once, in every channel they share:
the repeats are at best noise, at worst a second ``NICK`` from a nick that is gone.

So each of those events carries ``before``: the names of the subject's rooms that were posted
it first, space-separated, in the subject's order (None in its first room). A room posts it to
every member but those who are also in one of those rooms: they had it there. The rule reads
only the event and this node's membership, never what a reader has seen, so a line from
another node is thinned the same way (hub.receive_lines), and a member who shares no earlier
room with the subject gets it exactly where it would have anyway. Callers hold the hub lock
(it guards ``Room.members`` and ``Client.rooms``).
"""

from __future__ import annotations

from chatd.core.events import Kicked, Quit, Renamed
from chatd.text import fold

#: The events :func:`author` thins: they name their subject, not the room they are said in.
ONCE = frozenset((Renamed, Quit, Kicked))


class Except(frozenset):
    """The outboxes a room line is not for: its author (rooms.py's ``author``: no echo) and the
    members who had the line in an earlier room. Rooms tell it from an author by its class."""

    __slots__ = ()


def befores(names) -> list[str | None]:
    """Each room's ``before``, for a line posted to the rooms named ``names`` in that order."""
    return [" ".join(names[:index]) or None for index in range(len(names))]


def author(room, author, event, rooms: dict):
    """Who ``event`` is not for in ``room``: ``author`` (an outbox or None) and, for an event
    of :data:`ONCE` with a ``before``, the members of ``room`` in any of those rooms
    (``rooms``: folded name -> Room, the hub's). Returns ``author`` itself when nobody
    else is left out, which is nearly always."""
    if event.__class__ not in ONCE or not event.before:
        return author
    earlier = {rooms.get(fold(name)) for name in event.before.split(" ")}
    earlier.discard(None)
    had = {member.outbox for member in room.members.values()
           if not earlier.isdisjoint(member.rooms)}
    if not had:
        return author
    if author is not None:
        had.add(author)
    return Except(had)


def authors(room, events: list, rooms: dict) -> list | None:
    """:func:`author` (no author: another node's lines) for each of ``events``, or None if
    none of them leaves anyone out (the common case: one test per line)."""
    if not any(e.__class__ in ONCE and e.before for e in events):
        return None
    return [author(room, None, e, rooms) for e in events]
