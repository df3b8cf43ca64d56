"""Everything chatd tells a chat client, as data: one small class per kind of line.

The hub, the sessions, the commands and the admin side say *what* happened (``Joined(nick,
room)``); how it looks on the wire is the renderer's business (render.py for the line protocol
of docs/protocol.md §1). Keeping the two apart is what lets the room log carry events, a
cluster bus ship them to other nodes, and a second protocol render them its own way.

Events are frozen, slotted and compared by value, so tests can assert on them directly. The
``room`` fields are room *names*, never Room objects: an event must outlive the room it
mentions (a departure is rendered after the room may have been deleted).

Why a connection ended (a close reason, and the farewell its room sees) is closing.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- lines other members of a room see --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Said:
    """A chat message to the room."""

    nick: str
    text: str
    msgid: str = field(default="", compare=False)  # tagging.py: the line's identity
    tags: str = ""  # IRC client-only tags as sent on (tagging.py), "" nearly always
    account: str | None = None  # the speaker's account (IRC's account-tag), None: a guest


@dataclass(frozen=True, slots=True)
class Acted:
    """``/me TEXT``."""

    nick: str
    text: str
    msgid: str = field(default="", compare=False)  # tagging.py: the line's identity
    tags: str = ""  # IRC client-only tags as sent on (tagging.py), "" nearly always
    account: str | None = None  # the speaker's account (IRC's account-tag), None: a guest


@dataclass(frozen=True, slots=True)
class Noticed:
    """A notice to the room (IRC's NOTICE to a channel): text that asks for no answer."""

    nick: str
    text: str
    msgid: str = field(default="", compare=False)  # tagging.py: the line's identity
    tags: str = ""  # IRC client-only tags as sent on (tagging.py), "" nearly always
    account: str | None = None  # the speaker's account (IRC's account-tag), None: a guest


@dataclass(frozen=True, slots=True)
class Tagged:
    """IRC's TAGMSG to a room: client-only ``tags`` and no text (a typing notice, a
    reaction). Rendered only for IRC members that asked for ``message-tags``; never kept in
    the history."""

    nick: str
    msgid: str
    tags: str
    account: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    nick: str
    room: str
    account: str | None = None  # the joiner's account (IRC's account-tag), None: a guest


@dataclass(frozen=True, slots=True)
class Left:
    """A member left ``room``; ``reason`` is None for a plain ``/join`` elsewhere."""

    nick: str
    room: str
    reason: str | None = None
    account: str | None = None  # (as Joined's)


@dataclass(frozen=True, slots=True)
class Quit:
    """A member's connection ended (``reason``: why, as the log says it): the line protocol
    shows it as a departure with a reason, IRC as a QUIT, which a PART with a reason is not."""

    nick: str
    room: str
    reason: str
    before: str | None = None  # core/once.py: the rooms that had it first


@dataclass(frozen=True, slots=True)
class Kicked:
    """An operator kicked ``nick`` (what the rest of its room sees)."""

    nick: str
    reason: str
    before: str | None = None  # core/once.py


@dataclass(frozen=True, slots=True)
class Renamed:
    old: str
    new: str
    before: str | None = None  # core/once.py
    account: str | None = None  # (as Joined's: the account it is logged in to as ``new``)


@dataclass(frozen=True, slots=True)
class Announcement:
    """``chatctl broadcast``: a line from the operators."""

    text: str


# -- lines for one client ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    server_name: str


@dataclass(frozen=True, slots=True)
class YouAre:
    """The nick a new client was given."""

    nick: str


@dataclass(frozen=True, slots=True)
class Motd:
    """One line of the message of the day."""

    line: str


@dataclass(frozen=True, slots=True)
class NickChanged:
    """The reply to a successful ``/nick``."""

    nick: str


@dataclass(frozen=True, slots=True)
class NickRevoked:
    """Cluster mode: this client's nick was given to someone on another node while this node
    was cut off from the cluster (docs/cluster.md); it now has the guest nick ``new``."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class NickUnchanged:
    """``/nick X`` by a client that is already X: nothing to change, nobody to tell."""

    nick: str


@dataclass(frozen=True, slots=True)
class RoomEntered:
    """The reply to ``/join``; ``members`` counts the joiner."""

    room: str
    members: int


@dataclass(frozen=True, slots=True)
class RoomListed:
    """One line of ``/rooms``."""

    room: str
    members: int


@dataclass(frozen=True, slots=True)
class Members:
    """The reply to ``/who``."""

    room: str
    nicks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """What the recipient of ``/msg`` sees."""

    sender: str
    text: str
    msgid: str = field(default="", compare=False)
    tags: str = ""
    account: str | None = None


@dataclass(frozen=True, slots=True)
class PrivateTagged:
    """IRC's TAGMSG to one client: only ``tags`` (client-only tags, tagging.py), no text; told
    only to a client that asked for ``message-tags``."""

    sender: str
    msgid: str
    tags: str
    account: str | None = None


@dataclass(frozen=True, slots=True)
class PrivateSent:
    """The sender's receipt for ``/msg``."""

    target: str
    text: str


@dataclass(frozen=True, slots=True)
class IsAway:
    """Told the sender of a ``/msg`` to an away user (from the recipient's node)."""

    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class AwaySet:
    """The reply to ``/away [TEXT]``."""

    text: str


@dataclass(frozen=True, slots=True)
class AwayNoticed:
    """``nick``, who shares a room with the client, went away (``text``) or came back (None),
    or joined while away: told only to clients whose protocol follows it (Protocol
    ``follows_away``: IRC's ``away-notify``)."""

    nick: str
    text: str | None


@dataclass(frozen=True, slots=True)
class Back:
    """The reply to ``/back``."""


@dataclass(frozen=True, slots=True)
class WhoIs:
    """The reply to ``/whois NICK``: one line. ``idle`` in whole seconds, None when not
    known (a client of another node); ``node``: the node it is on, "" for this one;
    ``username`` and ``realname``: what an IRC client's USER said ("" otherwise)."""

    nick: str
    account: str | None
    rooms: tuple[str, ...]
    idle: int | None
    away: str | None
    node: str = ""
    username: str = ""
    realname: str = ""


@dataclass(frozen=True, slots=True)
class Ignoring:
    """``/ignore NICK`` (``now``: True) or ``/unignore NICK`` (False) done."""

    nick: str
    now: bool


@dataclass(frozen=True, slots=True)
class Ignores:
    """The reply to ``/ignores``: the nicks ignored, as typed."""

    nicks: tuple[str, ...]


# -- rooms that belong to someone (SPEC §13; core/stewardship.py) ------------------------------


@dataclass(frozen=True, slots=True)
class TopicSet:
    """A room line: ``nick`` set the topic of ``room`` (every member sees it, the setter too)."""

    nick: str
    room: str
    topic: str
    account: str | None = None  # (as Joined's; None for an operator's, ``[admin]``)


@dataclass(frozen=True, slots=True)
class TopicIs:
    """The topic of ``room``: told a joiner after its join reply, and the reply to ``/topic``;
    ``by``: who set it ("" if not known)."""

    room: str
    topic: str
    by: str = ""


@dataclass(frozen=True, slots=True)
class NoTopic:
    room: str


@dataclass(frozen=True, slots=True)
class RoomKicked:
    """A room line: an operator (``by``) kicked ``nick`` out of ``room``."""

    nick: str
    room: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class KickedFrom:
    """Told the member kicked out of ``room`` (it is back in the lobby)."""

    room: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Granted:
    """A room line: ``nick`` gave ``what`` ("operator status", "voice") to ``target``."""

    nick: str
    room: str
    what: str
    target: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """A room line: ``nick`` took ``what`` from ``target``."""

    nick: str
    room: str
    what: str
    target: str


@dataclass(frozen=True, slots=True)
class BanSet:
    """A room line: ``nick`` banned ``target`` from ``room``."""

    nick: str
    room: str
    target: str


@dataclass(frozen=True, slots=True)
class BanLifted:
    """A room line: ``nick`` lifted the ban on ``target`` in ``room``."""

    nick: str
    room: str
    target: str


@dataclass(frozen=True, slots=True)
class ModeSet:
    """A room line: ``nick`` changed the modes of ``room`` (``change``: ``+i``, ``-k``...)."""

    nick: str
    room: str
    change: str


@dataclass(frozen=True, slots=True)
class Modes:
    """The reply to ``/mode``: the room's modes (``+imt``; "" for none)."""

    room: str
    modes: str


@dataclass(frozen=True, slots=True)
class InvitedTo:
    """Told the invited: ``nick`` invited it to ``room``."""

    nick: str
    room: str
    account: str | None = None  # (as Joined's)


@dataclass(frozen=True, slots=True)
class Inviting:
    """The reply to ``/invite``."""

    target: str
    room: str


@dataclass(frozen=True, slots=True)
class RoomRegistered:
    """A room line: ``room`` now belongs to the account ``founder``."""

    room: str
    founder: str


@dataclass(frozen=True, slots=True)
class RoomListedTopic:
    """A ``/list`` line: ``/rooms``'s with the topic."""

    room: str
    members: int
    topic: str


@dataclass(frozen=True, slots=True)
class HelpLine:
    usage: str
    help: str


@dataclass(frozen=True, slots=True)
class Error:
    """A one-line error; it never closes the connection by itself."""

    text: str


@dataclass(frozen=True, slots=True)
class YouWereKicked:
    reason: str


@dataclass(frozen=True, slots=True)
class Banned:
    """Why a connection is refused or ended by a ban (reason and expiry when known)."""

    reason: str = ""
    until: str | None = None  # "YYYY-MM-DD HH:MM:SS UTC"; None: no expiry


@dataclass(frozen=True, slots=True)
class YouAreMuted:
    """An operator muted (``muted``) or unmuted this client."""

    muted: bool


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    pass


@dataclass(frozen=True, slots=True)
class ServerRestarting:
    """An upgrade cannot carry a TLS session to the new process (docs/protocol.md §9)."""


@dataclass(frozen=True, slots=True)
class Bye:
    """The last line before a ``/quit`` closes the connection."""


# -- accounts (docs/protocol.md §12) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginRequired:
    """Closed mode: what a new connection is told after the welcome."""


@dataclass(frozen=True, slots=True)
class Registered:
    """The reply to ``/register``: the current nick is an account now, and logged in."""

    account: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    account: str


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """The reply to ``/logout`` (open mode): the connection is a guest again, named ``nick``."""

    nick: str


@dataclass(frozen=True, slots=True)
class NickReclaimed:
    """The nick's owner logged in: this connection, which held it, is the guest ``new`` now."""

    owner: str
    new: str


@dataclass(frozen=True, slots=True)
class PasswordChanged:
    pass


@dataclass(frozen=True, slots=True)
class LoggedInElsewhere:
    """The last line of a connection whose account logged in on another one."""


@dataclass(frozen=True, slots=True)
class AccountDisabled:
    """The last line of a connection whose account an operator disabled."""
