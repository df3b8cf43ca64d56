"""What a room that belongs to someone knows (SPEC §13): founder, topic, modes, operators,
voices, bans and invitations, and the rules that read them. Pure: no locks, no I/O.

A :class:`RoomState` is immutable and replaced whole (``Room.state``, written under the hub
lock), so a thread that reads it without the lock (a chat line checking ``+m``) sees one
state, never half of a change. Names in it are folded; an entry names an account or a nick:
a client matches if its account or its nick is there (``/op bob`` ops the account bob is
logged in to, or the nick of a guest).

Who is an operator: the founder (an account; registered rooms), whoever an operator named,
and in a room nobody registered, the client that made it, while it stays (``creator``, a
client id, which is not stored).

``record``/``from_record`` are the stored form (a JSON object); a record read back is input
like a client line, and anything wrong in it makes it count as no record. ``outside`` in it
says ``-n`` outright: a record from before ``-n`` was honoured has none and reads as ``+n``,
which is what such a room did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from chatd.text import fold, is_valid_name

#: The modes of SPEC §13: invite-only, keyed, moderated, topic set by operators only; and
#: IRC's member limit (``l``, with ``limit``), no messages from outside (``n``: every room
#: starts with it; without it an IRC client that is not a member may send the room a line)
#: and secret (left out of IRC's LIST for non-members).
MODES = "iklmnst"
#: What a room starts with, and what a room nobody changed has (the blank state).
DEFAULT_MODES = "n"
#: Bounds of one room's lists (docs/protocol.md §3): names in each of ops, voiced, bans and
#: invites, and the lengths of a topic and a key.
MAX_NAMES = 256
MAX_TOPIC = 512
MAX_KEY = 64
MAX_LIMIT = 100_000  # +l's highest member limit


@dataclass(frozen=True)
class RoomState:
    founder: str | None = None  # the account that registered the room (folded), or None
    topic: str = ""
    topic_by: str = ""
    modes: str = DEFAULT_MODES  # a sorted subset of MODES ("k" only with a key, "l" a limit)
    key: str = ""
    ops: frozenset = frozenset()
    voiced: frozenset = frozenset()
    bans: frozenset = frozenset()
    invites: frozenset = frozenset()
    creator: int | None = None  # the client id that made an unregistered room, while in it
    limit: int = 0  # +l: at most this many members on every node (0: no limit)

    @property
    def registered(self) -> bool:
        return self.founder is not None

    @property
    def moderated(self) -> bool:
        return "m" in self.modes

    def change(self, **fields) -> RoomState:
        return dataclasses.replace(self, **fields)

    # -- who is what -------------------------------------------------------------------------

    def is_op(self, client_id: int | None, nick: str, account: str | None) -> bool:
        """``client_id`` None: a client of another node (never this room's creator here)."""
        account = fold(account) if account else None
        return ((self.creator is not None and client_id == self.creator)
                or (account is not None and account == self.founder)
                or _named(self.ops, nick, account))

    def is_voiced(self, nick: str, account: str | None) -> bool:
        return _named(self.voiced, nick, fold(account) if account else None)

    def may_speak(self, client_id: int, nick: str, account: str | None) -> bool:
        """In a moderated room only operators and voiced members speak."""
        return (not self.moderated or self.is_op(client_id, nick, account)
                or self.is_voiced(nick, account))

    def takes_line_from(self, client_id: int, nick: str, account: str | None) -> bool:
        """Whether a client that is not a member may send the room a line (IRC's PRIVMSG to
        a channel it is not on): only without ``+n``, never one the room bans, and in a
        moderated room only an operator or a voiced one."""
        return ("n" not in self.modes
                and not _named(self.bans, nick, fold(account) if account else None)
                and self.may_speak(client_id, nick, account))

    def refusal(self, name: str, nick: str, account: str | None, key: str,
                members: int = 0) -> str | None:
        """Why ``nick`` (logged in to ``account``) may not join room ``name`` with ``key``;
        None if it may. The founder is never shut out of its own room."""
        account = fold(account) if account else None
        if account is not None and account == self.founder:
            return None
        if _named(self.bans, nick, account):
            return f"you are banned from {name}"
        if "i" in self.modes and not _named(self.invites, nick, account):
            return f"{name} is invite-only"
        if "k" in self.modes and key != self.key:
            return f"wrong key for {name}"
        if "l" in self.modes and members >= self.limit:
            return f"{name} is full ({self.limit} members)"
        return None

    # -- the stored form ---------------------------------------------------------------------

    def record(self) -> dict:
        return {"founder": self.founder, "topic": self.topic, "topic_by": self.topic_by,
                "modes": self.modes, "key": self.key, "ops": sorted(self.ops),
                "voiced": sorted(self.voiced), "bans": sorted(self.bans),
                "invites": sorted(self.invites), "limit": self.limit,
                "outside": "n" not in self.modes}

    @classmethod
    def from_record(cls, value) -> RoomState | None:
        """A stored record as a state, or None if it is not a valid one."""
        if value.__class__ is not dict:
            return None
        founder, modes, key = value.get("founder"), value.get("modes", ""), value.get("key", "")
        topic, topic_by = value.get("topic", ""), value.get("topic_by", "")
        limit = value.get("limit", 0)  # (a record from before +l has none)
        outside = value.get("outside")  # (one from before -n was honoured has none: +n)
        if outside is None and modes.__class__ is str:
            modes += "n" if "n" not in modes else ""
        if not (founder is None or _is_name(founder)) or not _text(topic, MAX_TOPIC) \
                or not (topic_by == "" or _is_name(topic_by)) or not _text(key, MAX_KEY) \
                or modes.__class__ is not str or set(modes) - set(MODES) \
                or ("k" in modes) != bool(key) or limit.__class__ is not int \
                or not 0 <= limit <= MAX_LIMIT or ("l" in modes) != bool(limit) \
                or (outside is not None and outside is not ("n" not in modes)):
            return None
        names = [_names(value.get(field, [])) for field in ("ops", "voiced", "bans", "invites")]
        if None in names:
            return None
        return cls(founder and fold(founder), topic, topic_by, "".join(sorted(modes)), key,
                   *names, limit=limit)


def _named(names: frozenset, nick: str, account: str | None) -> bool:
    return bool(names) and (fold(nick) in names or (account is not None and account in names))


def _is_name(value) -> bool:
    return value.__class__ is str and is_valid_name(value)


def _text(value, limit: int) -> bool:
    return value.__class__ is str and len(value) <= limit and (not value or value.isprintable())


def _names(value) -> frozenset | None:
    if value.__class__ is not list or len(value) > MAX_NAMES \
            or not all(_is_name(v) for v in value):
        return None
    return frozenset(fold(v) for v in value)
