"""IRC's renderer: events (core/events.py) as the lines an IRC client reads (pure).

Two tables. :data:`ROOM_LINES` renders what a room's members see (``:alice!alice@chatd
PRIVMSG #dev :hi``): it names the channel, so rooms ask for one renderer per room
(:func:`room_renderer`), and one rendering serves every IRC member. :data:`TOLD` renders what
one client is told (its join, a private message, a topic reply): these name the client, so
they are rendered per connection with its nick (:class:`chatd.irc.protocol.IrcProtocol`).
An event neither table knows is told as a server NOTICE with the line protocol's text, so a
reply added to core reaches IRC users readably before it has an IRC form of its own.

Every line fits IRC's 512 bytes (message.encode's cut); text never holds CR or LF (the
sanitizer took controls out of everything a user typed).
"""

from __future__ import annotations

import time

from chatd.core import events as ev
from chatd.line import render as line_render

#: The host part of every user's mask (``nick!nick@chatd``): chatd does not show addresses.
HOST = "chatd"
#: The actor of an operator's change (core/stewardship.py ADMIN): shown as the server.
ADMIN = "[admin]"
#: What a grant's ``what`` is as an IRC mode letter.
GRANT_MODES = {"operator status": "o", "voice": "v"}
MAX_BYTES = 510  # 512 less CR LF


def mask(nick: str) -> str:
    return f"{nick}!{nick}@{HOST}"


def wire(text: str) -> bytes:
    """One line's bytes, CR LF added, cut at 510 bytes on a character boundary."""
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        data = data[:MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return data + b"\r\n"


def _source(nick: str, server: str) -> str:
    return server if nick == ADMIN else mask(nick)


def _quit(e) -> str:
    return f":{mask(e.nick)} QUIT :{e.reason}"


def _room_lines(channel: str, server: str) -> dict:
    """Room line renderers for ``channel`` (``#room``), with ``server`` as the operators'
    source."""
    def mode(nick: str, change: str) -> str:
        return f":{_source(nick, server)} MODE {channel} {change}"

    return {
        ev.Said: lambda e: f":{mask(e.nick)} PRIVMSG {channel} :{e.text}",
        ev.Acted: lambda e: f":{mask(e.nick)} PRIVMSG {channel} :\x01ACTION {e.text}\x01",
        ev.Noticed: lambda e: f":{mask(e.nick)} NOTICE {channel} :{e.text}",
        ev.Tagged: lambda e: f":{mask(e.nick)} TAGMSG {channel}",
        ev.Joined: lambda e: f":{mask(e.nick)} JOIN {channel}",
        ev.Left: lambda e: (f":{mask(e.nick)} PART {channel} :{e.reason}" if e.reason
                            else f":{mask(e.nick)} PART {channel}"),
        ev.Quit: _quit,
        ev.Kicked: lambda e: f":{mask(e.nick)} QUIT :kicked: {e.reason}",
        ev.Renamed: lambda e: f":{mask(e.old)} NICK :{e.new}",
        ev.Announcement: lambda e: f":{server} NOTICE {channel} :[admin] {e.text}",
        ev.TopicSet: lambda e: f":{_source(e.nick, server)} TOPIC {channel} :{e.topic}",
        ev.RoomKicked: lambda e: f":{_source(e.by, server)} KICK {channel} {e.nick} :{e.reason}",
        ev.Granted: lambda e: mode(e.nick, f"+{GRANT_MODES[e.what]} {e.target}"),
        ev.Revoked: lambda e: mode(e.nick, f"-{GRANT_MODES[e.what]} {e.target}"),
        ev.BanSet: lambda e: mode(e.nick, f"+b {e.target}!*@*"),
        ev.BanLifted: lambda e: mode(e.nick, f"-b {e.target}!*@*"),
        ev.ModeSet: lambda e: mode(e.nick, e.change),
        ev.RoomRegistered: lambda e: (f":{server} NOTICE {channel} :{channel} is registered "
                                      f"to {e.founder}"),
    }


#: What only a client that asked for ``message-tags`` is shown (a TAGMSG is tags only), in a
#: room and in private (protocol.py).
TAGS_ONLY = frozenset((ev.Tagged, ev.PrivateTagged))


def room_renderer(room: str, server: str, tagging: bool = False):
    """The function a room of IRC members renders its lines with (core/rooms.py);
    ``tagging``: for members with ``message-tags``, the only ones shown a TAGMSG."""
    channel = "#" + room
    table = _room_lines(channel, server)
    if not tagging:
        for cls in TAGS_ONLY:
            table.pop(cls, None)

    def render(event) -> bytes:
        format_ = table.get(event.__class__)
        if format_ is None:  # a line core added later: readable, as a notice
            if event.__class__ in TAGS_ONLY:
                return b""
            return wire(f":{server} NOTICE {channel} :{line_render.text(event)}")
        return wire(format_(event))

    return render


# -- what one client is told --------------------------------------------------------------------


def _numeric(server: str, number: str, me: str, *params: str) -> str:
    *middle, last = params
    return " ".join([f":{server}", number, me, *middle, f":{last}"])


def _notice(server: str, me: str, text: str) -> str:
    return f":{server} NOTICE {me} :{text}"


def _error(text: str) -> str:
    return f"ERROR :{text}"


#: event class -> (server, the client's nick, event) -> the line (without CR LF), or "" for
#: nothing (a reply IRC gives in its own words elsewhere: the command table's numerics).
TOLD = {
    ev.PrivateMessage: lambda s, me, e: f":{mask(e.sender)} PRIVMSG {me} :{e.text}",
    ev.PrivateTagged: lambda s, me, e: f":{mask(e.sender)} TAGMSG {me}",  # (message-tags only)
    ev.IsAway: lambda s, me, e: _numeric(s, "301", me, e.nick, e.text),
    ev.Announcement: lambda s, me, e: _notice(s, me, f"[admin] {e.text}"),  # (in no room)
    ev.RoomEntered: lambda s, me, e: f":{mask(me)} JOIN #{e.room}",
    ev.TopicIs: lambda s, me, e: (_numeric(s, "332", me, "#" + e.room, e.topic) + "\r\n"
                                  + _numeric(s, "333", me, "#" + e.room, e.by or s, "0")),
    ev.NoTopic: lambda s, me, e: _numeric(s, "331", me, "#" + e.room, "No topic is set"),
    ev.KickedFrom: lambda s, me, e: f":{_source(e.by, s)} KICK #{e.room} {me} :{e.reason}",
    ev.InvitedTo: lambda s, me, e: f":{mask(e.nick)} INVITE {me} #{e.room}",
    ev.Inviting: lambda s, me, e: _numeric(s, "341", me, e.target, "#" + e.room),
    ev.AwaySet: lambda s, me, e: _numeric(s, "306", me, "You have been marked as being away"),
    ev.AwayNoticed: lambda s, me, e: (f":{mask(e.nick)} AWAY :{e.text}" if e.text is not None
                                      else f":{mask(e.nick)} AWAY"),
    ev.Back: lambda s, me, e: _numeric(s, "305", me, "You are no longer marked as being away"),
    ev.Error: lambda s, me, e: _notice(s, me, f"*** error: {e.text}"),
    ev.LoggedIn: lambda s, me, e: _numeric(s, "900", me, mask(me), e.account,
                                           f"You are now logged in as {e.account}"),
    ev.YouAre: lambda s, me, e: "",  # registration's 001 says it
    ev.Welcome: lambda s, me, e: "",
    ev.Motd: lambda s, me, e: "",
    ev.NickUnchanged: lambda s, me, e: "",
    ev.PrivateSent: lambda s, me, e: "",  # IRC has no receipt (echo-message is the command's)
    ev.Bye: lambda s, me, e: _error("Closing Link: quit"),
    ev.YouWereKicked: lambda s, me, e: _error(f"Closing Link: kicked: {e.reason}"),
    ev.Banned: lambda s, me, e: _error(f"Closing Link: {line_render.text(e)[10:]}"),
    ev.ServerShutdown: lambda s, me, e: _error("Closing Link: server shutting down"),
    ev.ServerRestarting: lambda s, me, e: _error("Closing Link: server restarting"),
    ev.LoggedInElsewhere: lambda s, me, e: _error("Closing Link: logged in elsewhere"),
    ev.AccountDisabled: lambda s, me, e: _error("Closing Link: account disabled"),
}

#: Told events that change the client's nick: (event) -> the new nick.
NICK_CHANGES = {
    ev.NickChanged: lambda e: e.nick,
    ev.NickRevoked: lambda e: e.new,
    ev.NickReclaimed: lambda e: e.new,
    ev.LoggedOut: lambda e: e.nick,
}


def told(server: str, me: str, event) -> str:
    """What the client ``me`` reads for ``event`` (no CR LF; "" for nothing)."""
    format_ = TOLD.get(event.__class__)
    if format_ is None:
        return _notice(server, me or "*", line_render.text(event))
    return format_(server, me or "*", event)


#: Events with a ``msgid`` and client-only tags (core/tagging.py), for ``message-tags``.
IDENTIFIED = frozenset((ev.Said, ev.Acted, ev.Noticed, ev.PrivateMessage, ev.Tagged,
                        ev.PrivateTagged))
#: Events that carry their speaker's account, for ``account-tag``: made where the speaker
#: is, so they name it on every node. Operators' lines and the server's carry none.
ACCOUNTED = IDENTIFIED | {ev.Joined, ev.Left, ev.TopicSet, ev.Renamed, ev.InvitedTo}


def tags(event, timed: bool, accounts: bool, tagging: bool = False) -> bytes:
    """The tags a line of ``event`` starts with (``@time=…;account=…;msgid=…;+a=b ``), or
    b"" for none: ``timed``: ``server-time``; ``accounts``: ``account-tag``, the speaker's
    account the line carries (:data:`ACCOUNTED`); ``tagging``: ``message-tags``, the line's msgid
    and its sender's client-only tags. Account names are names (text.py), msgids letters and
    digits, client tags escaped already (tagging.py): nothing here needs escaping."""
    found = []
    if timed:
        found.append("time=" + stamp(time.time()))
    if accounts and event.__class__ in ACCOUNTED and event.account:
        found.append("account=" + event.account)
    if tagging and event.__class__ in IDENTIFIED:
        if event.msgid:
            found.append("msgid=" + event.msgid)
        if event.tags:
            found.append(event.tags)
    return ("@" + ";".join(found) + " ").encode() if found else b""


def stamp(ts: float) -> str:
    """A ``server-time`` tag's value: UTC, milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def history_line(entry, timed: bool) -> bytes:
    """One history entry (core/tail.Entry) as the PRIVMSG it was, with its time if the client
    asked for ``server-time``."""
    text = f"\x01ACTION {entry.text}\x01" if entry.kind == "me" else entry.text
    tag = f"@time={stamp(entry.ts)} " if timed else ""
    return tag.encode() + wire(f":{mask(entry.nick)} PRIVMSG #{entry.room} :{text}")
