"""IRC as core sees it (chatd/core/protocol.py): a shared room renderer and a per-connection
object that addresses what a client is told to its nick.

A room renders its lines once for all its IRC members (:class:`IrcRooms`, one per
service: rooms compare it by identity), because a room line names its channel and the
speaker, never the reader. What one client is told names the client (``:server 332 alice
#dev :topic``, ``:bob!bob@chatd PRIVMSG alice :hi``), so each connection has its own
:class:`IrcProtocol`, which knows the nick the client was last told it has.
"""

from __future__ import annotations

from chatd.irc import render
from chatd.irc.reader import IrcReader

CLUSTER_UNAVAILABLE = "cluster unavailable, try again"


def irc_server_name(name: str) -> str:
    """``server_name`` as an IRC source: no spaces (a server name is one word there)."""
    return "-".join(name.split()) or "chatd"


#: The capabilities that change how a room line looks: one IrcRooms for each combination.
ROOM_CAPS = ("server-time", "account-tag", "message-tags")


class IrcRooms:
    """How rooms render lines for their IRC members (protocol.py ``RoomRenderer``). One
    exists for each combination of :data:`ROOM_CAPS` (:func:`room_renderers`): ``server-time``
    tags each line with the time it was posted, ``account-tag`` with its speaker's account,
    ``message-tags`` with its msgid and client-only tags (and shows TAGMSG); a room renders
    a line once for each it has members of, so a room of clients that all asked for the
    same (nearly always) renders once."""

    __slots__ = ("settings", "timed", "accounts", "tagging")
    name = "irc"

    def __init__(self, settings, timed: bool = False, accounts: bool = False,
                 tagging: bool = False) -> None:
        self.settings = settings  # server_name as it is when a room starts speaking IRC
        self.timed = timed
        self.accounts = accounts  # account-tag
        self.tagging = tagging

    def renderer(self, room: str):
        timed, accounts, tagging = self.timed, self.accounts, self.tagging
        plain = render.room_renderer(room, irc_server_name(self.settings.config.server_name),
                                     tagging)
        if not timed and not accounts and not tagging:
            return plain

        def tagged(event) -> bytes:
            text = plain(event)
            return render.tags(event, timed, accounts, tagging) + text if text else b""

        return tagged

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<irc rooms>"


def room_renderers(settings) -> dict:
    """An :class:`IrcRooms` for each combination of :data:`ROOM_CAPS` (a tuple of booleans in
    that order)."""
    return {(timed, tagged, tagging): IrcRooms(settings, timed, tagged, tagging)
            for timed in (False, True) for tagged in (False, True) for tagging in (False, True)}


class IrcProtocol:
    """One IRC connection's output side and the maker of its reader.

    ``nick`` is the nick the client was last told it has: a reply that changes it (a NICK
    line) is rendered from the old one, which the hub has replaced by then. It is written by
    renders of nick changes, which the hub makes under its lock, one at a time; ``caps`` (the
    capabilities the client enabled) by its session thread; both are read by any thread that
    renders for it."""

    __slots__ = ("speaks", "nick", "caps", "server", "_renderers")
    name = "irc"
    names_itself = True  # NICK and USER first (registration.py)
    roomless = True  # in no room until it JOINs
    cluster_unavailable = CLUSTER_UNAVAILABLE

    def __init__(self, renderers: dict) -> None:
        """``renderers``: :func:`room_renderers`'s, shared by every IRC connection."""
        self._renderers = renderers
        self.speaks = rooms = renderers[(False, False, False)]
        self.nick = ""
        self.caps: frozenset = frozenset()
        self.server = irc_server_name(rooms.settings.config.server_name)

    @property
    def follows_away(self) -> bool:
        return "away-notify" in self.caps

    def rooms_for(self, caps) -> IrcRooms:
        """The room renderer for a client with capabilities ``caps``."""
        return self._renderers[tuple(cap in caps for cap in ROOM_CAPS)]

    def text(self, event) -> str:
        """``event`` as this client reads it, without CR LF ("" for nothing)."""
        changed = render.NICK_CHANGES.get(event.__class__)
        if changed is not None:
            old, self.nick = self.nick, changed(event)
            return f":{render.mask(old)} NICK :{self.nick}" if old != self.nick else ""
        return render.told(self.server, self.nick, event)

    def line(self, event) -> bytes:
        text = self.text(event)
        if not text or (event.__class__ in render.TAGS_ONLY and "message-tags" not in self.caps):
            return b""
        tag = self._tags(event)
        return b"".join([tag + render.wire(part) for part in text.split("\r\n")])

    def echo(self, event, text: str) -> bytes:
        """``text``, a line this client sent, as ``echo-message`` returns it: with the
        tags ``event`` (what its recipient was sent) carries for this client."""
        return self._tags(event) + render.wire(text)

    def _tags(self, event) -> bytes:
        caps = self.caps
        if not caps:
            return b""
        return render.tags(event, "server-time" in caps, "account-tag" in caps,
                           "message-tags" in caps)

    def lines(self, events) -> bytes:
        return b"".join([self.line(event) for event in events])

    def history(self, room: str, entries: list) -> bytes:
        """A join's replay: the lines as they were said, timed for ``server-time`` clients."""
        timed = "server-time" in self.caps
        return b"".join([render.history_line(entry, timed) for entry in entries])

    def missed(self, room: str, entries: list, since: float, gone_before: float | None) -> bytes:
        """What an account missed: a notice saying so, then the lines, timed."""
        head = f"{len(entries)} line{'' if len(entries) == 1 else 's'} you missed in #{room}"
        if gone_before is not None:
            head += " (older lines are gone)"
        notice = render.wire(f":{self.server} NOTICE {self.nick or '*'} :*** {head}")
        return notice + self.history(room, entries)

    def reader(self, session) -> IrcReader:
        return IrcReader(session, self)

    def greeting(self, config) -> list:
        return []  # registration's numerics are the reader's (IrcReader.register)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<irc protocol {self.nick or '?'}>"
