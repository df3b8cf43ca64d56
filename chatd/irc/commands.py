"""The IRC commands of SPEC §14 after registration, as a table: command -> handler.

A handler gets the connection's :class:`~chatd.irc.reader.IrcReader` (``client``, ``hub``,
``settings``, ``reply()``, ``send()``, ``numeric()``) and the message's parameters. It acts
through the same hub doors as the line protocol's commands (rooms, nicks, ownership,
presence), so both sides see the same chat; it answers in numerics, built here, because
they name the client. Room lines that result (a JOIN, a TOPIC, a MODE) are the room's, and
reach the client as every member's do. Runs on the client's session thread.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
import time

from chatd.core.bus import ClusterUnavailable
from chatd.core.events import Acted, Error, Noticed, PrivateMessage, Said, TopicIs
from chatd.core.hub import LOBBY
from chatd.core.roomstate import MODES
from chatd.irc import operators, welcome
from chatd.irc.message import Message
from chatd.irc.render import HOST, mask
from chatd.text import NAME_RULE, fold, is_valid_name, sanitize

CLUSTER_UNAVAILABLE = "cluster unavailable, try again"
#: How a hub refusal reads as a numeric: (words in the text, numeric), first match wins.
REFUSALS = (("banned from", "474"), ("is invite-only", "473"), ("wrong key", "475"),
            ("too many rooms", "405"), ("not an operator", "482"), ("you are not in", "442"),
            ("no such nick", "401"), ("is not in", "441"), (" is in ", "443"),
            ("usage: /mode +k", "525"), ("usage: /mode +l", "696"), ("is full", "471"),
            ("registered", "433"), ("in use", "433"))
#: The most targets one JOIN, PART or PRIVMSG names (005 MAXTARGETS); more are ignored.
MAX_TARGETS = 4
ACTION = "\x01ACTION "
_NUMBER = re.compile(r"-?[0-9]{1,9}")  # (str.isdigit takes "²", which int() refuses)


def dispatch(reader, message) -> None:
    handler = COMMANDS.get(message.command)
    if handler is None:
        reader.reply("421", message.command[:20], "Unknown command")
        return
    needed = NEEDS.get(message.command, 0)
    if len(message.params) < needed or (needed and not message.params[0]):
        reader.reply("461", message.command, "Not enough parameters")
        return
    handler(reader, message.params)


def _refused(reader, problem: str, *about: str) -> None:
    """A hub refusal as the numeric an IRC client expects (:data:`REFUSALS`), else a notice."""
    for words, number in REFUSALS:
        if words in problem:
            reader.reply(number, *about, problem)
            return
    reader.hub.send_to(reader.client, Error(problem))


def _room(target: str) -> str | None:
    """The room a ``#channel`` names, or None if it is not one chatd could have."""
    name = target[1:] if target.startswith("#") else None
    return name if name and is_valid_name(name) else None


def _targets(text: str) -> list[str]:
    return [t for t in text.split(",") if t][:MAX_TARGETS]


def _member_room(reader, name: str):
    """The client's Room named ``name``, or None."""
    key = fold(name)
    for room in reader.client.rooms:
        if fold(room.name) == key:
            return room
    return None


def _my_room(reader, target: str):
    """The client's Room that ``target`` (``#room``) names, or None after telling it 442."""
    name = _room(target)
    room = _member_room(reader, name) if name else None
    if room is None and name is not None and reader.hub.members_of(name)[1]:
        reader.reply("442", target[:30], "You're not on that channel")
    elif room is None:
        reader.reply("403", target[:30], "No such channel")
    return room


# -- rooms ----------------------------------------------------------------------------------------


def do_join(reader, params: tuple) -> None:
    if params[0] == "0":  # leave every channel
        for room in reader.client.rooms:
            do_part(reader, ("#" + room.name,))
        return
    keys = params[1].split(",") if len(params) > 1 else []
    for index, target in enumerate(_targets(params[0])):
        name = _room(target)
        if name is None:
            reader.reply("403", target[:30], f"No such channel ({NAME_RULE}, after #)")
            continue
        if _member_room(reader, name) is not None:
            continue  # already there: nothing happens (RFC 2812 §3.2.1)
        problem = reader.hub.enter(reader.client, name, keys[index] if index < len(keys) else "",
                                   reader.places.pop(fold(name), None))
        if problem:
            _refused(reader, problem, "#" + name)
            continue
        send_names(reader, name)
        client, accounts = reader.client, reader.settings.accounts
        reader.session.log.info("room_joined", room=name, nick=client.nick)
        if client.account is not None and accounts is not None:
            accounts.here(client.account, [room.name for room in client.rooms])


def do_part(reader, params: tuple) -> None:
    reason = sanitize(params[1]) if len(params) > 1 and params[1] else None
    for target in _targets(params[0]):
        name = _room(target)
        room = _member_room(reader, name) if name else None
        if room is None:
            reader.reply("442" if name else "403", target[:30], "You're not on that channel")
            continue
        problem = reader.hub.part(reader.client, room.name, reason)
        if problem:
            _refused(reader, problem, target)
            continue
        tail = f" :{reason}" if reason else ""
        reader.send(f":{reader.source} PART #{room.name}{tail}")


def send_names(reader, name: str) -> None:
    """RPL_NAMREPLY (353) and its end (366), with ``multi-prefix`` and ``userhost-in-names``."""
    shown, members = reader.hub.members_of(name)
    caps = reader.protocol.caps
    multi, full = "multi-prefix" in caps, "userhost-in-names" in caps
    words = []
    for nick, op, voiced, _away in members:
        prefix = ("@" if op else "") + ("+" if voiced else "")
        words.append((prefix if multi else prefix[:1]) + (mask(nick) if full else nick))
    channel = "#" + shown
    symbol = "@" if _secret(reader, shown) else "="
    for start in range(0, len(words), 20):
        reader.reply("353", symbol, channel, " ".join(words[start:start + 20]))
    reader.reply("366", channel, "End of /NAMES list.")


def do_names(reader, params: tuple) -> None:
    if not params:
        reader.reply("366", "*", "End of /NAMES list.")
        return
    for target in _targets(params[0]):
        name = _room(target)
        if name is None:
            reader.reply("366", target[:30], "End of /NAMES list.")
        else:
            send_names(reader, name)


def do_topic(reader, params: tuple) -> None:
    room = _my_room(reader, params[0])
    if room is None:
        return
    if len(params) == 1:
        state = room.state
        if state.topic:
            reader.hub.send_to(reader.client, TopicIs(room.name, state.topic, state.topic_by))
        else:
            reader.reply("331", "#" + room.name, "No topic is set")
        return
    problem = reader.hub.set_topic(reader.client, room.name, sanitize(params[1]))
    if problem:
        _refused(reader, problem, "#" + room.name)


def do_list(reader, params: tuple) -> None:
    wanted = {fold(n) for n in (_room(t) for t in _targets(params[0])) if n} if params else None
    mine = {fold(room.name) for room in reader.client.rooms}
    for name, count, topic in reader.hub.listing():
        if count == 0 and fold(name) == LOBBY:
            continue  # the line protocol's default room: listed while someone is in it
        if fold(name) not in mine and _secret(reader, name):
            continue  # +s: only its members see it
        if wanted is None or fold(name) in wanted:
            reader.reply("322", "#" + name, str(count), topic)
    reader.reply("323", "End of /LIST")


def do_kick(reader, params: tuple) -> None:
    room = _my_room(reader, params[0])
    if room is None:
        return
    reason = sanitize(params[2]) if len(params) > 2 and params[2] else reader.client.nick
    for nick in _targets(params[1]):
        problem = reader.hub.kick_from_room(reader.client, room.name, nick, reason)
        if problem:
            _refused(reader, problem, nick, "#" + room.name)


def do_invite(reader, params: tuple) -> None:
    nick, room = params[0], _my_room(reader, params[1])
    if room is None:
        return
    client, state = reader.client, room.state
    if "i" in state.modes and not state.is_op(client.id, client.nick, client.account):
        reader.reply("482", "#" + room.name, "You're not channel operator")
        return  # (an invite-only room's invitations are its operators', as IRC has it)
    problem = reader.hub.invite(reader.client, room.name, nick)
    if problem:
        _refused(reader, problem, nick, "#" + room.name)
    else:
        reader.reply("341", nick, "#" + room.name)


# -- modes ----------------------------------------------------------------------------------------


def do_mode(reader, params: tuple) -> None:
    target = params[0]
    if not target.startswith("#"):
        _user_mode(reader, target, params[1] if len(params) > 1 else None)
        return
    room = _my_room(reader, target)
    if room is None:
        return
    if len(params) == 1:
        state = room.state  # (324's modes and the limit as parameters of their own)
        limit = f" {state.limit}" if "l" in state.modes else ""
        reader.send(f":{reader.protocol.server} 324 {reader.nick} #{room.name} "
                    f"+{state.modes}{limit}")
        reader.reply("329", "#" + room.name, str(int(room.created)))
        return
    for change, argument in _mode_changes(params[1], list(params[2:])):
        _change_mode(reader, room, change, argument)


#: The user modes a client may set on itself: invisible (which changes nothing here: chatd
#: lists nobody to strangers) and wallops (accepted; chatd sends none).
USER_MODES = "iw"


def _user_mode(reader, target: str, spec: str | None) -> None:
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


def _in_room(reader, nick: str, channel: str) -> bool:
    """Whether ``nick`` is a member of ``channel``; else the client is told 441 (it is not
    in it) or 401 (there is no such nick)."""
    members = reader.hub.members_of(channel[1:])[1]
    if any(fold(member[0]) == fold(nick) for member in members):
        return True
    if reader.hub.find(nick) is not None or reader.hub.recipient(nick) is not None:
        reader.reply("441", nick[:30], channel, "They aren't on that channel")
    else:
        reader.reply("401", nick[:30], "No such nick/channel")
    return False


def _secret(reader, name: str) -> bool:
    """Whether room ``name`` is secret (+s): its state here, or the cluster's."""
    found = reader.hub.room_state(name)
    return found is not None and "s" in found[1].modes


def _mode_changes(spec: str, arguments: list) -> list[tuple[str, str | None]]:
    """``+o-v alice bob`` -> [("+o", "alice"), ("-v", "bob")]; letters that take an
    argument take the next one (b, k when set, o, v)."""
    sign, changes = "+", []
    for letter in spec:
        if letter in "+-":
            sign = letter
            continue
        takes = letter in "bov" or (letter in "kl" and sign == "+")
        argument = arguments.pop(0) if takes and arguments else None
        changes.append((sign + letter, argument))
    return changes[:8]


def _change_mode(reader, room, change: str, argument: str | None) -> None:
    hub, client, on = reader.hub, reader.client, change[0] == "+"
    letter = change[1]
    channel = "#" + room.name
    if letter == "b" and argument is None:
        for entry in sorted(room.state.bans):
            reader.reply("367", channel, f"{entry}!*@*", "chatd")
        reader.reply("368", channel, "End of channel ban list")
        return
    if letter in "ov":
        if argument is None or not _in_room(reader, argument, channel):
            return
        problem = hub.grant(client, room.name, "ops" if letter == "o" else "voiced",
                            argument, on)
    elif letter == "b":
        problem = hub.ban(client, room.name, argument.split("!")[0], on)
    elif letter in MODES:
        if letter in "kl" and on and not argument:
            return  # (+k or +l without its argument: nothing to set)
        problem = hub.set_mode(client, room.name, change, argument or "")
    else:
        reader.reply("472", letter, "is unknown mode char to me")
        return
    if problem and problem.startswith("usage: /mode +l"):
        reader.reply("696", channel, "l", argument or "*", "Invalid limit mode parameter")
    elif problem and "already" not in problem:
        _refused(reader, problem, channel)


# -- messages -------------------------------------------------------------------------------------


def do_privmsg(reader, params: tuple, notice: bool = False) -> None:
    if len(params) < 2 or not params[1]:
        if not notice:
            reader.reply("412" if len(params) >= 1 else "411", "No text to send")
        return
    raw = params[1]
    acted = raw.startswith(ACTION)
    text = sanitize(raw[len(ACTION):].rstrip("\x01") if acted else raw)
    if not text:
        return
    for target in _targets(params[0]):
        if target.startswith("#"):
            _to_room(reader, target, text, acted, notice)
        else:
            _to_nick(reader, target, text, notice)


def do_notice(reader, params: tuple) -> None:
    do_privmsg(reader, params, notice=True)


def _to_room(reader, target: str, text: str, acted: bool, notice: bool) -> None:
    client, name = reader.client, _room(target)
    room = _member_room(reader, name) if name else None
    if room is None:
        if not notice:
            reader.reply("404" if name else "403", target[:30], "Cannot send to channel")
        return
    if client.muted or (room.state.modes and not room.state.may_speak(
            client.id, client.nick, client.account)):
        if not notice:
            reader.reply("404", "#" + room.name, "Cannot send to channel (+m)")
        return
    event = (Acted if acted else Noticed if notice else Said)(client.nick, text)
    reader.hub.say(client, event, room, echo="echo-message" in reader.protocol.caps)
    reader.session.log_message(text, room=room.name)


def _to_nick(reader, nick: str, text: str, notice: bool) -> None:
    recipient = reader.hub.recipient(nick)
    if recipient is None:
        if not notice:
            reader.reply("401", nick[:30], "No such nick/channel")
        return
    if reader.client.muted:
        return
    target, send = recipient
    away = send(PrivateMessage(reader.client.nick, text))
    reader.client.private_messages += 1
    if "echo-message" in reader.protocol.caps:
        reader.send(f":{reader.source} PRIVMSG {target} :{text}")
    if away is not None and not notice:
        reader.hub.send_to(reader.client, away)
    reader.session.log_message(text, to=target)


# -- who is who -----------------------------------------------------------------------------------


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
        _refused(reader, problem, new)


#: The most WHO replies to a mask (``WHO *``, ``WHO al*``): the first by nick.
MAX_WHO = 200


def do_who(reader, params: tuple) -> None:
    """``WHO #room`` (its members on every node), ``WHO nick``, or ``WHO mask`` (this node's
    clients whose nick matches, at most :data:`MAX_WHO`)."""
    target = params[0] if params else "*"
    name = _room(target)
    if name is not None:
        shown, members = reader.hub.members_of(name)
        rows = [("#" + shown, *member) for member in members]
    elif "*" in target or "?" in target:
        pattern, mine = fold(target), set(reader.client.rooms)
        rows = [("*", c.nick, False, False, c.away) for c in sorted(
            reader.hub.clients(), key=lambda c: fold(c.nick))
            if c.nick and fnmatch.fnmatchcase(fold(c.nick), pattern)
            and (c is reader.client or "i" not in c.user_modes or mine.intersection(c.rooms))
            ][:MAX_WHO]  # (+i: seen by those who share a channel with it)
    else:
        found = _whois(reader, target)
        rows = [("*", found.nick, False, False, found.away)] if found else []
    server, multi = reader.protocol.server, "multi-prefix" in reader.protocol.caps
    for channel, nick, op, voiced, away in rows:
        user, real = _names_of(reader, nick)
        person = reader.hub.find(nick)
        prefix = ("@" if op else "") + ("+" if voiced else "")
        flags = ("G" if away is not None else "H") \
            + ("*" if person is not None and "o" in person.user_modes else "") \
            + (prefix if multi else prefix[:1])
        reader.reply("352", channel, user, HOST, server, nick, flags, f"0 {real}")
    reader.reply("315", target[:30], "End of WHO list")


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
    user, real = _names_of(reader, found.nick)
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
    """Who held a nick on this node before (core/census.py keeps the last departures)."""
    nick = params[0]
    count = params[1] if len(params) > 1 else ""
    entries = reader.hub.whowas(nick, int(count) if _NUMBER.fullmatch(count) else 0)
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


# -- the server -----------------------------------------------------------------------------------


def do_ping(reader, params: tuple) -> None:
    server = reader.protocol.server
    reader.send(f":{server} PONG {server} :{params[0]}")


def do_quit(reader, params: tuple) -> None:
    reader.quit(sanitize(params[0]) if params and params[0] else "Client Quit")


def do_cap(reader, params: tuple) -> None:
    """CAP after registration: LS and LIST answer; REQ changes what this client gets."""
    registration = reader.registration
    replies = registration.handle(Message("CAP", params))
    registration.negotiating = False
    reader.send_messages(replies)
    reader.use_caps()


def do_motd(reader, _params: tuple) -> None:
    reader.send(*welcome.motd(reader, reader.settings.config.motd))


def do_lusers(reader, _params: tuple) -> None:
    reader.send(*welcome.lusers(reader))


def do_time(reader, _params: tuple) -> None:
    now = time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime())
    reader.reply("391", reader.protocol.server, now)


def do_userhost(reader, params: tuple) -> None:
    found = [c for c in map(reader.hub.find, params[:5]) if c is not None]
    reader.reply("302", " ".join(
        f"{c.nick}={'-' if c.away is not None else '+'}{c.username or c.nick}@{HOST}"
        for c in found))


def do_ison(reader, params: tuple) -> None:
    words = " ".join(params).split()[:20]
    reader.reply("303", " ".join(c.nick for c in map(reader.hub.find, words) if c is not None))


def authenticate(reader, params: tuple) -> None:
    """SASL PLAIN (``AUTHENTICATE PLAIN``, then the base64 of ``authzid NUL authcid NUL
    password``) onto an account, before registration ends."""
    if "sasl" not in reader.registration.enabled or not params:
        reader.reply("904", "SASL authentication failed")
        return
    word = params[0]
    if reader.sasl is None:
        if word.upper() != "PLAIN":
            reader.reply("908", "PLAIN", "are available SASL mechanisms")
            reader.reply("904", "SASL authentication failed")
            return
        reader.sasl = "PLAIN"
        reader.send("AUTHENTICATE +")
        return
    reader.sasl = None
    if word == "*":
        reader.reply("906", "SASL authentication aborted")
        return
    try:
        _authzid, name, password = base64.b64decode(word, validate=True).decode().split("\0")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        reader.reply("904", "SASL authentication failed")
        return
    problem = welcome.log_in(reader, name, password) if name and password else "bad request"
    if problem:
        reader.reply("904", f"SASL authentication failed: {problem}")
    else:
        reader.reply("903", "SASL authentication successful")


COMMANDS = {
    "JOIN": do_join, "PART": do_part, "NAMES": do_names, "TOPIC": do_topic, "LIST": do_list,
    "KICK": do_kick, "INVITE": do_invite, "MODE": do_mode, "PRIVMSG": do_privmsg,
    "NOTICE": do_notice, "NICK": do_nick, "WHO": do_who, "WHOIS": do_whois, "AWAY": do_away,
    "PING": do_ping, "PONG": lambda reader, params: None, "QUIT": do_quit, "CAP": do_cap,
    "WHOWAS": do_whowas, "MOTD": do_motd, "LUSERS": do_lusers, "TIME": do_time,
    "USERHOST": do_userhost, "ISON": do_ison,
    "USER": lambda reader, params: reader.reply("462", "You may not reregister"),
    "PASS": lambda reader, params: reader.reply("462", "You may not reregister"),
    "AUTHENTICATE": lambda reader, params: reader.reply("907", "You have already authenticated"),
    **operators.COMMANDS,
}
#: Parameters a command needs (461 otherwise).
NEEDS = {"JOIN": 1, "PART": 1, "TOPIC": 1, "KICK": 2, "INVITE": 2, "MODE": 1, "PRIVMSG": 1,
         "NICK": 1, "WHOIS": 1, "WHOWAS": 1, "PING": 1, "USERHOST": 1, "ISON": 1,
         **operators.NEEDS}
