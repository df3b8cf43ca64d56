"""The line protocol's renderer: events (events.py) to the exact text of docs/protocol.md §1–§3.

This is the only place that knows what a chat client sees on the wire. Each event class maps
to one function returning the line without its CRLF; :func:`line` adds the CRLF and encodes.
Pure functions, no state: the hub calls :func:`line` once per event (outside the hub and room
locks where it can), and the room log keeps the bytes next to the event, so a room line is
rendered once however many members it reaches.
"""

from __future__ import annotations

import time

from chatd.core import events as ev
from chatd.line.framing import CRLF


def _members(count: int) -> str:
    return "1 member" if count == 1 else f"{count} members"


def _left(e: ev.Left | ev.Quit) -> str:
    return f"*** {e.nick} left {e.room} ({e.reason})" if e.reason else f"*** {e.nick} left {e.room}"


def _idle(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _whois(e: ev.WhoIs) -> str:
    """``*** NICK: account NAME (or guest); in ROOM, ROOM; idle 1m 5s; away: TEXT``."""
    parts = [f"account {e.account}" if e.account else "guest",
             f"in {', '.join(e.rooms)}" if e.rooms else "in no room"]
    if e.node:
        parts.append(f"on {e.node}")
    if e.idle is not None:
        parts.append(f"idle {_idle(e.idle)}")
    if e.away is not None:
        parts.append(f"away: {e.away}")
    return f"*** {e.nick}: {'; '.join(parts)}"


def _banned(e: ev.Banned) -> str:
    details = "; ".join(x for x in (e.reason, e.until and f"until {e.until}") if x)
    return f"*** error: banned ({details})" if details else "*** error: banned"


_FORMATS = {
    ev.Said: lambda e: f"<{e.nick}> {e.text}",
    ev.Acted: lambda e: f"* {e.nick} {e.text}",
    ev.Noticed: lambda e: f"-{e.nick}- {e.text}",
    ev.Tagged: lambda e: "",  # IRC's TAGMSG: tags only, nothing a line client reads
    ev.PrivateTagged: lambda e: "",
    ev.Joined: lambda e: f"*** {e.nick} joined {e.room}",
    ev.Left: _left,
    ev.Quit: _left,
    ev.Kicked: lambda e: f"*** {e.nick} was kicked ({e.reason})",
    ev.Renamed: lambda e: f"*** {e.old} is now known as {e.new}",
    ev.Announcement: lambda e: f"*** [admin] {e.text}",
    ev.Welcome: lambda e: f"*** welcome to {e.server_name}",
    ev.YouAre: lambda e: f"*** you are {e.nick}",
    ev.Motd: lambda e: f"*** {e.line}",
    ev.NickChanged: lambda e: f"*** you are now {e.nick}",
    ev.NickUnchanged: lambda e: f"*** you are already {e.nick}",
    ev.NickRevoked: lambda e: (f"*** your nick {e.old} was taken while this server was cut off "
                               f"from the cluster; you are now {e.new}"),
    ev.RoomEntered: lambda e: f"*** you joined {e.room} ({_members(e.members)})",
    ev.RoomListed: lambda e: f"*** {e.room} ({_members(e.members)})",
    ev.Members: lambda e: f"*** in {e.room}: {', '.join(e.nicks)}",
    ev.PrivateMessage: lambda e: f"*{e.sender}* {e.text}",
    ev.PrivateSent: lambda e: f"*** -> {e.target}: {e.text}",
    ev.HelpLine: lambda e: f"*** {e.usage} - {e.help}",
    ev.TopicSet: lambda e: f"*** {e.nick} set the topic: {e.topic}",
    ev.TopicIs: lambda e: f"*** topic of {e.room}: {e.topic}",
    ev.NoTopic: lambda e: f"*** {e.room} has no topic",
    ev.RoomKicked: lambda e: f"*** {e.nick} was kicked from {e.room} by {e.by}: {e.reason}",
    ev.KickedFrom: lambda e: f"*** you were kicked from {e.room} by {e.by}: {e.reason}",
    ev.Granted: lambda e: f"*** {e.nick} gave {e.what} to {e.target}",
    ev.Revoked: lambda e: f"*** {e.nick} took {e.what} from {e.target}",
    ev.BanSet: lambda e: f"*** {e.nick} banned {e.target} from {e.room}",
    ev.BanLifted: lambda e: f"*** {e.nick} lifted the ban on {e.target} in {e.room}",
    ev.ModeSet: lambda e: f"*** {e.nick} set mode {e.change} on {e.room}",
    ev.Modes: lambda e: (f"*** modes of {e.room}: +{e.modes}" if e.modes
                         else f"*** {e.room} has no modes"),
    ev.InvitedTo: lambda e: f"*** {e.nick} invited you to {e.room} (/join {e.room})",
    ev.Inviting: lambda e: f"*** invited {e.target} to {e.room}",
    ev.RoomRegistered: lambda e: f"*** {e.room} is registered to {e.founder}",
    ev.RoomListedTopic: lambda e: (f"*** {e.room} ({_members(e.members)}): {e.topic}"
                                   if e.topic else f"*** {e.room} ({_members(e.members)})"),
    ev.IsAway: lambda e: f"*** {e.nick} is away: {e.text}",
    ev.AwaySet: lambda e: f"*** you are away: {e.text}",
    ev.AwayNoticed: lambda e: (f"*** {e.nick} is away: {e.text}" if e.text is not None
                               else f"*** {e.nick} is back"),  # (not told: follows_away)
    ev.Back: lambda e: "*** you are back",
    ev.WhoIs: _whois,
    ev.Ignoring: lambda e: f"*** ignoring {e.nick}" if e.now else f"*** no longer ignoring {e.nick}",
    ev.Ignores: lambda e: f"*** ignoring: {', '.join(e.nicks)}" if e.nicks else "*** ignoring nobody",
    ev.Error: lambda e: f"*** error: {e.text}",
    ev.YouWereKicked: lambda e: f"*** you were kicked: {e.reason}",
    ev.Banned: _banned,
    ev.YouAreMuted: lambda e: "*** you are muted" if e.muted else "*** you are no longer muted",
    ev.ServerShutdown: lambda e: "*** server shutting down",
    ev.ServerRestarting: lambda e: "*** server restarting, please reconnect",
    ev.Bye: lambda e: "*** bye",
    ev.LoginRequired: lambda e: "*** this server needs an account: /login NICK PASSWORD",
    ev.Registered: lambda e: f"*** registered {e.account}",
    ev.LoggedIn: lambda e: f"*** logged in as {e.account}",
    ev.LoggedOut: lambda e: f"*** logged out; you are now {e.nick}",
    ev.NickReclaimed: lambda e: f"*** you are now {e.new} ({e.owner} logged in)",
    ev.PasswordChanged: lambda e: "*** password changed",
    ev.LoggedInElsewhere: lambda e: "*** logged in elsewhere",
    ev.AccountDisabled: lambda e: "*** your account was disabled",
}


def text(event) -> str:
    """The line for ``event``, without its line ending."""
    return _FORMATS[event.__class__](event)


def line(event) -> bytes:
    """One event as one CRLF-terminated UTF-8 line (nothing for an event a line client is
    not shown: IRC's TAGMSG)."""
    text = _FORMATS[event.__class__](event)
    return text.encode("utf-8") + CRLF if text else b""


def lines(events) -> bytes:
    """Several events as one buffer, so they leave in one send."""
    return "".join([_FORMATS[e.__class__](e) + "\r\n" for e in events]).encode("utf-8")


def history(room: str, entries: list) -> bytes:
    """The SPEC §10 replay: header, one line per entry, footer, CRLF-terminated. The header
    counts as member counts do: ``(1 line)``, ``(2 lines)`` (issue 23: SPEC's "(N lines)" read
    "(1 lines)" for one)."""
    n = len(entries)
    lines = [f"*** history of {room} ({n} line{'' if n == 1 else 's'})", *(e.line() for e in entries),
             "*** end of history"]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def missed(room: str, entries: list, since: float, gone_before: float | None) -> bytes:
    """SPEC §12's what-you-missed block: ``history incomplete`` first when the history no
    longer reaches back to ``since`` (``gone_before``: the time of the oldest line left), the
    header, one §10 line per entry, footer. Counted as the history header is: ``1 line``."""
    n = len(entries)
    lines = [f"*** history incomplete: lines before {_utc(gone_before)} are gone"] \
        if gone_before is not None else []
    lines += [f"*** {n} line{'' if n == 1 else 's'} you missed in {room} since {_utc(since)}",
              *(e.line() for e in entries), "*** end of history"]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
