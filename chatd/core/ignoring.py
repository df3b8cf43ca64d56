"""Server-side ignore (SPEC §13): what a client asked not to be sent, and the one test of it.

A client's ignore list is a frozenset of folded nicks on its outbox (``Outbox.ignoring``),
replaced whole by its own session thread and read by whoever delivers to it: the flusher
thread for room lines (rooms.py), the hub for private lines. An account's nick is the account
while it is logged in, so ignoring a nick that is an account ignores the account. Only what
that nick *says* is held back: room lines, actions, private messages and the lines of history
replays and what-you-missed blocks; its joins, departures and renames still show, so the
room makes sense.

The cost falls on those who ignore: a room keeps the set of its members' outboxes that
ignore anyone (``Room.ignorers``), and a flush groups those by their ignore list and gives
each group one filtered buffer (twenty members ignoring one spammer share it).
A room where nobody ignores anyone flushes as before, plus one test of an empty set per flush
and one of None per reader: nothing per line.
"""

from __future__ import annotations

from chatd.core.events import Acted, Noticed, PrivateMessage, PrivateTagged, Said, Tagged
from chatd.text import fold

#: The most nicks one client may ignore (SPEC §13; docs/protocol.md §3).
MAX_IGNORES = 64

NOBODY: frozenset = frozenset()

_SPOKEN = (Said, Acted, Noticed, Tagged)
_PRIVATE = (PrivateMessage, PrivateTagged)


def hides(ignoring: frozenset, event) -> bool:
    """Whether a reader ignoring ``ignoring`` is kept from room event ``event``."""
    return event.__class__ in _SPOKEN and fold(event.nick) in ignoring


def hides_private(ignoring: frozenset, event) -> bool:
    """Whether a private ``event`` (a /msg) comes from a nick in ``ignoring``."""
    return event.__class__ in _PRIVATE and fold(event.sender) in ignoring


def unhidden(ignoring: frozenset, entries: list) -> list:
    """History entries (tail.Entry) but those of ignored nicks."""
    if not ignoring:
        return entries
    return [e for e in entries if fold(e.nick) not in ignoring]
