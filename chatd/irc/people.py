"""The IRC commands about people (docs/protocol.md §14): NICK, WHO, WHOIS, WHOWAS, AWAY,
USERHOST, ISON and the user modes. WHO, WHOIS and WHOWAS show an IRC client's user name and
real name as its USER gave them; a line client's are its nick."""

from __future__ import annotations

import fnmatch
import time

from chatd.core.bus import ClusterUnavailable
from chatd.irc.render import HOST
from chatd.irc.targets import CLUSTER_UNAVAILABLE, NUMBER, refused, room_name
from chatd.text import fold, is_valid_name, sanitize

#: The user modes a client may set on itself: invisible (which changes nothing here: chatd
#: lists nobody to strangers) and wallops (accepted; chatd sends none).
USER_MODES = "iw"


def user_mode(reader, target: str, spec: str | None) -> None:
    """``MODE NICK [+i-w...]``: 221 for a query, the change echoed, 501 for other letters."""
    if fold(target) != fold(reader.client.nick):
        reader.reply("502", "Can't change mode for other users")
        return
    client = reader.client
    if spec is None:
        reader.reply("221", "+" + "".join(sorted(client.user_modes)))
        return
    sign, changed = "+", []
    for letter in spec:
        if letter in "+-":
            sign = letter
        elif letter == "o" and sign == "-" and "o" in client.user_modes:
            client.user_modes = client.user_modes - {"o"}  # (+o only through OPER)
            changed.append("-o")
        elif letter not in USER_MODES:
            reader.reply("501", "Unknown MODE flag")
        elif (letter in client.user_modes) != (sign == "+"):
            client.user_modes = client.user_modes ^ {letter}
            changed.append(sign + letter)
    if changed:
        reader.send(f":{reader.source} MODE {reader.client.nick} :{''.join(changed)}")




def do_nick(reader, params: tuple) -> None:
    new = params[0]
    if not is_valid_name(new):
        reader.reply("432", new[:30], "Erroneous nickname")
        return
    accounts, client = reader.settings.accounts, reader.client
    if accounts is not None and fold(new) not in (fold(client.nick), fold(client.account or "")):
        owned = accounts.registered(new)
        if owned:
            reader.reply("433", new, f"nick {new} is registered")
            return
    try:
        problem = reader.hub.rename(client, new)
    except ClusterUnavailable:
        problem = CLUSTER_UNAVAILABLE
    if problem:
        refused(reader, problem, new)


#: The most WHO replies to a mask (``WHO *``, ``WHO al*``): the first by nick.
MAX_WHO = 200


def do_who(reader, params: tuple) -> None:
    """``WHO #room`` (its members on every node), ``WHO nick``, or ``WHO mask`` (the clients
    whose nick matches, at most :data:`MAX_WHO`: this node's, and another node's that share a
    room with the asker, :func:`_sharing_elsewhere`). User and real names are known of
    this node's IRC clients, and of another node's from its member record: for ``WHO nick``,
    and for ``WHO #room`` those of the first :data:`MAX_WHO` members (the rest show their
    nicks: one WHO costs at most that many records read and opened)."""
    target = params[0] if params else "*"
    name = room_name(target)
    if name is not None:
        shown, members = reader.hub.members_of(name)
        names = reader.hub.names_elsewhere([member[0] for member in members[:MAX_WHO]
                                            if reader.hub.find(member[0]) is None])
        rows = [("#" + shown, *member, names.get(fold(member[0]))) for member in members]
    elif "*" in target or "?" in target:
        pattern, mine = fold(target), set(reader.client.rooms)
        rows = [("*", c.nick, False, False, c.away, None) for c in reader.hub.clients()
                if c.nick and fnmatch.fnmatchcase(fold(c.nick), pattern)
                and (c is reader.client or "i" not in c.user_modes or mine.intersection(c.rooms))
                ]  # (+i: seen by those who share a channel with it)
        rows = sorted(rows + _sharing_elsewhere(reader, pattern, {fold(row[1]) for row in rows}),
                      key=lambda row: fold(row[1]))[:MAX_WHO]
    else:
        found = _whois(reader, target)  # (on any node: its names from its member record)
        rows = [("*", found.nick, False, False, found.away,
                 (found.username or found.nick, found.realname or found.nick))] if found else []
    server, multi = reader.protocol.server, "multi-prefix" in reader.protocol.caps
    for channel, nick, op, voiced, away, names in rows:
        user, real = (names[0] or nick, names[1] or nick) if names else _names_of(reader, nick)
        person = reader.hub.find(nick)
        prefix = ("@" if op else "") + ("+" if voiced else "")
        flags = ("G" if away is not None else "H") \
            + ("*" if person is not None and "o" in person.user_modes else "") \
            + (prefix if multi else prefix[:1])
        reader.reply("352", channel, user, HOST, server, nick, flags, f"0 {real}")
    reader.reply("315", target[:30], "End of WHO list")


def _sharing_elsewhere(reader, pattern: str, seen: set) -> list:
    """``WHO MASK``'s rows for another node's clients: those whose nick matches ``pattern``
    (folded) and who share a room with the asker, at most :data:`MAX_WHO`, with their names
    from their member records. Their user modes are not known here, so each is taken as
    ``+i`` (seen only by those who share a channel with it); ``seen``: this node's, shown
    already."""
    found: dict = {}
    for room in list(reader.client.rooms):
        for nick, _, _, away in reader.hub.members_of(room.name)[1]:
            key = fold(nick)
            if key not in seen and key not in found and len(found) < MAX_WHO \
                    and fnmatch.fnmatchcase(key, pattern) and reader.hub.find(nick) is None:
                found[key] = (nick, away)
    names = reader.hub.names_elsewhere([nick for nick, _ in found.values()])
    return [("*", nick, False, False, away, names.get(key, ("", "")))
            for key, (nick, away) in found.items()]


def _names_of(reader, nick: str) -> tuple[str, str]:
    """(user name, real name) of ``nick``: what USER said for an IRC client of this node,
    its nick for anyone else."""
    person = reader.hub.find(nick)
    if person is None:
        return nick, nick
    return person.username or nick, person.realname or nick


def _whois(reader, nick: str):
    try:
        return reader.hub.whois(nick) if is_valid_name(nick) else None
    except ClusterUnavailable:
        return None


def do_whois(reader, params: tuple) -> None:
    nick = params[-1]
    found = _whois(reader, nick)
    if found is None:
        reader.reply("401", nick[:30], "No such nick/channel")
        reader.reply("318", nick[:30], "End of /WHOIS list")
        return
    user, real = found.username or found.nick, found.realname or found.nick
    lines = [reader.numeric("311", found.nick, user, HOST, "*", real),
             reader.numeric("312", found.nick, found.node or reader.protocol.server, "chatd")]
    if found.rooms:
        lines.append(reader.numeric("319", found.nick, " ".join(
            _prefixed(reader, room, found.nick) for room in found.rooms)))
    if found.account:
        lines.append(reader.numeric("330", found.nick, found.account, "is logged in as"))
    if found.away is not None:
        lines.append(reader.numeric("301", found.nick, found.away))
    person = reader.hub.find(found.nick)
    if person is not None and "o" in person.user_modes:
        lines.append(reader.numeric("313", found.nick, "is an IRC operator"))
    if found.idle is not None and person is not None:
        lines.append(reader.numeric("317", found.nick, str(found.idle),
                                    str(int(person.connected_at)), "seconds idle, signon time"))
    lines.append(reader.numeric("318", found.nick, "End of /WHOIS list"))
    reader.send(*lines)


def _prefixed(reader, room: str, nick: str) -> str:
    """``@#room``, ``+#room`` or ``#room``: ``nick``'s status there (319)."""
    for member, op, voiced, _away in reader.hub.members_of(room)[1]:
        if fold(member) == fold(nick):
            return ("@" if op else "+" if voiced else "") + "#" + room
    return "#" + room


def do_whowas(reader, params: tuple) -> None:
    """Who held a nick before, on any node (core/census.py, cluster/departures.py)."""
    nick = params[0]
    count = params[1] if len(params) > 1 else ""
    entries = reader.hub.whowas(nick, int(count) if NUMBER.fullmatch(count) else 0)
    if not entries:
        reader.reply("406", nick[:30], "There was no such nickname")
    for held, user, real, when in entries:
        reader.reply("314", held, user, HOST, "*", real)
        reader.reply("312", held, reader.protocol.server,
                     time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(when)))
    reader.reply("369", nick[:30], "End of WHOWAS")


def do_away(reader, params: tuple) -> None:
    text = sanitize(params[0]) if params and params[0] else None
    reader.hub.set_away(reader.client, text)
    if text is None:
        reader.reply("305", "You are no longer marked as being away")
    else:
        reader.reply("306", "You have been marked as being away")


def do_userhost(reader, params: tuple) -> None:
    found = [c for c in map(reader.hub.find, params[:5]) if c is not None]
    reader.reply("302", " ".join(
        f"{c.nick}={'-' if c.away is not None else '+'}{c.username or c.nick}@{HOST}"
        for c in found))


def do_ison(reader, params: tuple) -> None:
    words = " ".join(params).split()[:20]
    reader.reply("303", " ".join(c.nick for c in map(reader.hub.find, words) if c is not None))


