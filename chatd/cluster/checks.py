"""What a sealed value may say: the checks every line and record read back from Redis passes
after its tag (codec.py), as client input would.

A tag proves a node wrote a value, not that it is sane (a node of another version, a bug), so
names follow the nick and room rule, text is sanitised and no longer than a client (or, for an
operator's text, the admin socket) could have sent, records are type-checked, and a routed
admin action is one of orders.py's with arguments that pass its check. What fails raises
codec.Rejected. Pure functions.
"""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

from chatd.cluster import wire
from chatd.cluster.codec import Rejected
from chatd.core import events as ev
from chatd.core.membership import MAX_ROOMS
from chatd.core.position import Position
from chatd.core.roomchanges import GRANTED
from chatd.core.roomstate import MAX_TOPIC, MODES
from chatd.core.stewardship import ADMIN
from chatd.core.tagging import is_client_tags, is_msgid
from chatd.text import fold, is_valid_name, sanitize

#: Operator text (broadcasts, kick reasons) comes from the admin socket: its request limit.
MAX_ADMIN_TEXT = 64 * 1024
MAX_PEER = 64  # "[ipv6]:port" fits
MAX_NODE = 64  # config.py's node_name rule

def name(value) -> str:
    """A nick or room name by the clients' rule (docs/protocol.md §1)."""
    if value.__class__ is not str or not is_valid_name(value):
        raise Rejected(f"bad name {str(value)[:40]!r}")
    return value


def optional_name(value) -> str | None:
    return None if value is None else name(value)


def names(value, limit: int) -> tuple[str, ...]:
    """A list of at most ``limit`` names."""
    if value.__class__ is not list or len(value) > limit:
        raise Rejected("bad list of names")
    return tuple(map(name, value))


def _before(value) -> str | None:
    """An event's ``before`` (core/once.py): None, or at most MAX_ROOMS room names
    separated by single spaces."""
    if value is None:
        return None
    if value.__class__ is not str:
        raise Rejected("bad list of rooms")
    return " ".join(names(value.split(" "), MAX_ROOMS))


def node_name(value) -> str:
    if value.__class__ is not str or not 0 < len(value) <= MAX_NODE or not value.isprintable() \
            or " " in value or "|" in value:
        raise Rejected(f"bad node name {str(value)[:40]!r}")
    return value


def clean(value, limit: int) -> str:
    """Text as a client could have sent it: sanitised, at most ``limit`` UTF-8 bytes."""
    if value.__class__ is not str:
        raise Rejected("text is not a string")
    value = sanitize(value)
    if len(value) > limit // 4 and len(value.encode()) > limit:
        raise Rejected(f"text of {len(value.encode())} bytes")
    return value


def number(value) -> float:
    if value.__class__ not in (int, float) or not math.isfinite(value):
        raise Rejected(f"bad number {str(value)[:40]!r}")
    return value


_SAID, _ACTED = ev.Said, ev.Acted


def actor(value) -> str:
    """Who changed a room: a nick, or the operator's ``[admin]`` (core/stewardship.py)."""
    return value if value == ADMIN else name(value)


def _granted(value) -> str:
    if value not in GRANTED:
        raise Rejected(f"not a grant: {str(value)[:40]!r}")
    return value


#: A mode change as a room line names it: sign groups of mode letters, then +l's number.
_MODE_CHANGE = re.compile(rf"(?:[+-][{MODES}]{{1,8}}){{1,8}}(?: [0-9]{{1,7}})?")
_LIMIT_SET = re.compile(rf"\+[{MODES}]*l")


#: An IRC client's user name and real name as USER gave them (irc/reader.py's cuts).
MAX_USER_NAME = 24
MAX_REAL_NAME = 100


def user_name(value) -> str:
    """An IRC user name: printable, no spaces (irc/reader.py _identify)."""
    if value.__class__ is not str or len(value) > MAX_USER_NAME \
            or not (value.isprintable() and " " not in value):
        raise Rejected(f"bad user name {str(value)[:30]!r}")
    return value


def real_name(value) -> str:
    """An IRC real name: text as a client could send it, at most MAX_REAL_NAME characters."""
    value = clean(value, MAX_REAL_NAME * 4)
    if len(value) > MAX_REAL_NAME:
        raise Rejected(f"a real name of {len(value)} characters")
    return value


def _msgid(value) -> str:
    """A line's msgid (core/tagging.py), or "" from a node too old to send one."""
    if value != "" and not is_msgid(value):
        raise Rejected(f"not a msgid: {str(value)[:20]!r}")
    return value


def _client_tags(value) -> str:
    if not is_client_tags(value):
        raise Rejected(f"not client tags: {str(value)[:20]!r}")
    return value


def _mode_change(value) -> str:
    """``+i``, ``-k``, ``+l N`` (a member limit shows its number), or several as one
    (``-int``, ``+il 5``: an IRC MODE line's, roomchanges.joined_modes)."""
    if value.__class__ is not str or not _MODE_CHANGE.fullmatch(value) \
            or (" " in value) != bool(_LIMIT_SET.search(value)):
        raise Rejected(f"not a mode change: {str(value)[:20]!r}")
    return value


class Member(NamedTuple):
    """A checked member record: another node's client."""

    nick: str
    room: str | None  # its current room
    peer: str
    connected_at: float
    rooms: tuple[str, ...]  # every room it is in
    account: str | None
    away: str | None = None  # /away's text
    username: str = ""  # an IRC client's USER (WHOIS), "" for a line client
    realname: str = ""


class Validator:
    """Events and records read back from Redis, checked as client input is. ``max_line``:
    this node's ``max_line_bytes`` (what a client may send)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._names: set[str] = set()  # valid names seen: the reader thread (start-up before it)
        self._short = max_line // 4  # characters surely within max_line bytes of UTF-8
        # event class -> a check per field
        user, admin = self._user_text, self._admin_text
        self._rules = {
            ev.Said: (name, user, _msgid, _client_tags, optional_name),
            ev.Acted: (name, user, _msgid, _client_tags, optional_name),
            ev.Noticed: (name, user, _msgid, _client_tags, optional_name),
            ev.Tagged: (name, _msgid, _client_tags, optional_name),
            ev.PrivateTagged: (name, _msgid, _client_tags, optional_name),
            ev.Joined: (name, name, optional_name),
            ev.Left: (name, name, self._reason, optional_name),
            ev.Quit: (name, name, self._reason, _before),
            ev.Kicked: (name, admin, _before),
            ev.Renamed: (name, name, _before, optional_name), ev.Announcement: (admin,),
            ev.PrivateMessage: (name, user, _msgid, _client_tags, optional_name),
            ev.IsAway: (name, user),
            ev.TopicSet: (actor, name, self._topic, optional_name),
            ev.RoomKicked: (name, name, actor, admin),
            ev.Granted: (actor, name, _granted, name), ev.Revoked: (actor, name, _granted, name),
            ev.BanSet: (actor, name, name), ev.BanLifted: (actor, name, name),
            ev.ModeSet: (actor, name, _mode_change), ev.RoomRegistered: (name, name),
            ev.InvitedTo: (name, name, optional_name),
        }

    def away(self, value) -> str:
        """An away text (a line of its client's input)."""
        return self._user_text(value)

    @staticmethod
    def _topic(value) -> str:
        return clean(value, MAX_TOPIC * 4)

    def _user_text(self, value) -> str:
        return clean(value, self.max_line)

    @staticmethod
    def _admin_text(value) -> str:
        return clean(value, MAX_ADMIN_TEXT)

    @staticmethod
    def _reason(value):
        return None if value is None else clean(value, MAX_ADMIN_TEXT)

    def event(self, decoded):
        """An event from its decoded JSON list, each field checked; Rejected otherwise."""
        if decoded.__class__ is list and len(decoded) == 4:  # the common case, cheaply
            kind, nick, said, msgid = decoded
            cls = _SAID if kind == "Said" else _ACTED if kind == "Acted" else None
            if cls is not None and said.__class__ is str and len(said) <= self._short \
                    and said.isprintable() and self.is_name(nick) and is_msgid(msgid):
                return cls(nick, said, msgid)
        return self._event(decoded)

    def is_name(self, value) -> bool:
        """name()'s rule, remembered for the few nicks and rooms of nearly every line
        (bounded): the reader's per-line check costs a set lookup, not a regex."""
        if value.__class__ is not str:
            return False
        if value in self._names:
            return True
        if not is_valid_name(value):
            return False
        if len(self._names) >= 4096:
            self._names.clear()
        self._names.add(value)
        return True

    def _event(self, decoded):
        try:
            event = wire.from_list(decoded)
        except wire.WireError as exc:
            raise Rejected(str(exc)) from None
        rules = self._rules[event.__class__]
        values = [getattr(event, f) for f in event.__slots__]
        checked = [check(v) for check, v in zip(rules, values)]
        return event if checked == values else event.__class__(*checked)

    def member(self, value: str) -> Member:
        """A ``members`` record (leases.member_record): four fields, or six with the rooms
        and the account, or seven with the away text, or nine with an IRC client's user
        name and real name."""
        try:
            nick, room, peer, connected_at, *rest = json.loads(value)
            rooms, account, *more = rest if rest else ([] if room is None else [room], None)
            if len(more) <= 1:  # (no user name and real name: a line client's, or older)
                more = [*(more or [None]), "", ""]
            away, username, realname = more
        except (ValueError, TypeError):
            raise Rejected("not a member record") from None
        if peer.__class__ is not str or len(peer) > MAX_PEER or not peer.isprintable():
            raise Rejected("bad peer")
        return Member(name(nick), optional_name(room), peer, number(connected_at),
                      names(rooms, MAX_ROOMS), optional_name(account),
                      None if away is None else self._user_text(away),
                      user_name(username), real_name(realname))

    def history(self, value: str) -> tuple[float, str, object]:
        """A history list value ``TS ROOM EVENT`` -> (ts, room, Said or Acted)."""
        try:
            ts, room, encoded = value.split(" ", 2)
            ts, decoded = float(ts), json.loads(encoded)
        except (ValueError, TypeError):
            raise Rejected("not a history line") from None
        event = self.event(decoded)
        if event.__class__ not in (ev.Said, ev.Acted):
            raise Rejected("not a room line")
        return number(ts), name(room), event

    @staticmethod
    def lease(value: str) -> dict:
        """A node's lease record: {since, address, clients}."""
        try:
            info = json.loads(value)
            since, address, clients = info["since"], info["address"], info["clients"]
        except (ValueError, TypeError, KeyError):
            raise Rejected("not a lease") from None
        if address.__class__ is not str or len(address) > MAX_PEER or clients.__class__ is not int:
            raise Rejected("bad lease")
        return {"since": number(since), "address": sanitize(address), "clients": clients}

    @staticmethod
    def owner(value: str) -> tuple[str, int]:
        """A nick claim's or member key's ``node|client id``."""
        node, _, client_id = value.rpartition("|")
        if not client_id.isascii() or not client_id.isdigit() or len(client_id) > 18:
            raise Rejected("bad owner")
        return node_name(node), int(client_id)


def stamp_list(item) -> list[float]:
    """``["ts", [TIME, ...]]``: the times a writer gave its chat lines in an entry."""
    if len(item) != 2 or item[1].__class__ is not list:
        raise Rejected("not a list of times")
    times = item[1]
    if not all(map(epoch, times)):
        raise Rejected("bad time")
    return times


#: An account's hash as passwords.py writes it: a PHC string of well under this.
MAX_HASH = 512


def account_record(value: str) -> tuple:
    """An account's value (cluster/accounts.py) -> (name, hash, created, last_login or
    None, disabled)."""
    try:
        name_, hashed, created, last_login, disabled = json.loads(value)
    except (ValueError, TypeError):
        raise Rejected("not an account record") from None
    if hashed.__class__ is not str or not 0 < len(hashed) <= MAX_HASH \
            or not hashed.isascii() or not hashed.isprintable():
        raise Rejected("bad password hash")
    if disabled.__class__ is not bool or not epoch(created) \
            or last_login is not None and not epoch(last_login):
        raise Rejected("bad account fields")
    return name(name_), hashed, float(created), \
        None if last_login is None else float(last_login), disabled


def account_rooms(value: str) -> tuple[list, tuple[str, str] | None]:
    """Where an account is (cluster/accounts.py): -> (rooms, None) for where it was when it
    left, ``[[ROOM, POSITION], ...]`` (POSITION: position.Position's record); or (rooms with
    no position, (NODE, RUN)) while it is logged in there, ``{"live": [NODE, RUN], "rooms":
    [ROOM, ...]}`` (cluster/standing.py). At most MAX_ROOMS rooms."""
    try:
        decoded = json.loads(value)
        live = None
        if decoded.__class__ is dict:
            node, run = decoded["live"]
            live = (node_name(node), run)
            decoded = [[room, None] for room in decoded["rooms"]]
            if run.__class__ is not str or len(run) > 32:
                raise ValueError
        if decoded.__class__ is not list or len(decoded) > MAX_ROOMS:
            raise ValueError
        return [(name(room), None if live else Position.from_record(at))
                for room, at in decoded], live
    except (ValueError, TypeError, KeyError, RecursionError):
        raise Rejected("not an account's rooms") from None


def room_key(value) -> str:
    """A folded room name (history keys, purge)."""
    if value.__class__ is not str or not is_valid_name(value) or fold(value) != value:
        raise Rejected(f"bad room key {str(value)[:40]!r}")
    return value


def epoch(value) -> bool:
    """A time as seconds since the epoch, before the year 9999."""
    return value.__class__ in (int, float) and 0 <= value < 253402300800
