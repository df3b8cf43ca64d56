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
import time

from chatd.core.events import Acted, Noticed, PrivateMessage, PrivateTagged, Said, Tagged
from chatd.core.tagging import new_msgid
from chatd.irc import channels, operators, people, welcome
from chatd.irc.message import Message, client_tags
from chatd.irc.targets import ACTION, member_room, room_name, targets
from chatd.text import sanitize


def dispatch(reader, message) -> None:
    handler = COMMANDS.get(message.command)
    if handler is None:
        reader.reply("421", message.command[:20], "Unknown command")
        return
    needed = NEEDS.get(message.command, 0)
    if len(message.params) < needed or (needed and not message.params[0]):
        reader.reply("461", message.command, "Not enough parameters")
        return
    if message.command in RELAYING:
        # client-only tags go on only from a client that asked for message-tags
        relayed = client_tags(message.tags) \
            if message.tags and "message-tags" in reader.protocol.caps else ""
        handler(reader, message.params, relayed)
    else:
        handler(reader, message.params)


# -- messages -------------------------------------------------------------------------------------


def do_privmsg(reader, params: tuple, tags: str, notice: bool = False) -> None:
    if len(params) < 2 or not params[1]:
        if not notice:
            reader.reply("412" if len(params) >= 1 else "411", "No text to send")
        return
    raw = params[1]
    acted = raw.startswith(ACTION)
    text = sanitize(raw[len(ACTION):].rstrip("\x01") if acted else raw)
    if not text:
        return
    for target in targets(params[0]):
        if target.startswith("#"):
            event = (Acted if acted else Noticed if notice else Said)(
                reader.client.nick, text, new_msgid(), tags, reader.client.account)
            said = _say_to_channel(reader, target, event, quiet=notice)
            if said is not None:
                reader.session.log_message(text, room=said)
        else:
            sent = _to_nick(reader, target, PrivateMessage(reader.client.nick, text, new_msgid(),
                                                           tags, reader.client.account),
                            "NOTICE" if notice else "PRIVMSG", text, quiet=notice)
            if sent:
                reader.session.log_message(text, to=sent)


def do_notice(reader, params: tuple, tags: str) -> None:
    do_privmsg(reader, params, tags, notice=True)


def do_tagmsg(reader, params: tuple, tags: str) -> None:
    """IRCv3 TAGMSG: client-only tags and no text (a typing notice), to members and
    clients that asked for ``message-tags``; others are sent nothing (core/tagging.py)."""
    for target in targets(params[0]):
        if target.startswith("#"):
            _say_to_channel(reader, target, Tagged(reader.client.nick, new_msgid(), tags,
                                                   reader.client.account),
                            quiet=False, counted=False)
        else:
            _to_nick(reader, target, PrivateTagged(reader.client.nick, new_msgid(), tags,
                                                   reader.client.account),
                     "TAGMSG", None, quiet=False)


def _say_to_channel(reader, target: str, event, quiet: bool,
                    counted: bool = True) -> str | None:
    """``event`` (a chat line) to the channel ``target`` (``#dev``): the client's room, or
    one that takes lines from outside (``-n``: core/stewardship.say_from_outside). Returns
    the room's name, or None after the numeric that says why unless ``quiet`` (a NOTICE is
    never answered). ``echo-message`` echoes it either way."""
    client, name = reader.client, room_name(target)
    room = member_room(reader, name) if name else None
    echo = "echo-message" in reader.protocol.caps
    if room is not None:
        if client.muted or ("m" in room.state.modes and not room.state.may_speak(
                client.id, client.nick, client.account)):
            if not quiet:
                reader.reply("404", "#" + room.name, "Cannot send to channel (+m)")
            return None
        reader.hub.say(client, event, room, echo=echo, counted=counted)
        return room.name
    said = None if name is None or client.muted \
        else reader.hub.say_from_outside(client, name, event, counted)
    if said is None:
        if not quiet:
            reader.reply("404" if name else "403", target[:30], "Cannot send to channel")
        return None
    if echo:  # (the room's members got it as a room line; the sender is not one of them)
        data = client.outbox.speaks.renderer(said)(event)
        if data:
            reader.hub.send_data(client, data, 1)
    return said


def _to_nick(reader, nick: str, event, command: str, text: str | None,
             quiet: bool) -> str | None:
    """``event`` to the client ``nick``; ``command`` and ``text`` (None: none) make the line
    ``echo-message`` returns. Returns the target's nick as its owner spells it, or None:
    none such (401 unless ``quiet``), or the sender is muted."""
    recipient = reader.hub.recipient(nick)
    if recipient is None:
        if not quiet:
            reader.reply("401", nick[:30], "No such nick/channel")
        return None
    if reader.client.muted:
        return None
    target, send = recipient
    away = send(event)
    if text is not None:  # (a TAGMSG is no message, for the metrics)
        reader.client.private_messages += 1
    if "echo-message" in reader.protocol.caps:
        echoed = f":{reader.source} {command} {target}"
        reader.hub.send_data(reader.client, reader.protocol.echo(
            event, echoed if text is None else f"{echoed} :{text}"), 1)
    if away is not None and not quiet:
        reader.hub.send_to(reader.client, away)
    return target


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
    "JOIN": channels.do_join, "PART": channels.do_part, "NAMES": channels.do_names, "TOPIC": channels.do_topic, "LIST": channels.do_list,
    "KICK": channels.do_kick, "INVITE": channels.do_invite, "MODE": channels.do_mode, "PRIVMSG": do_privmsg,
    "NOTICE": do_notice, "TAGMSG": do_tagmsg, "NICK": people.do_nick, "WHO": people.do_who, "WHOIS": people.do_whois, "AWAY": people.do_away,
    "PING": do_ping, "PONG": lambda reader, params: None, "QUIT": do_quit, "CAP": do_cap,
    "WHOWAS": people.do_whowas, "MOTD": do_motd, "LUSERS": do_lusers, "TIME": do_time,
    "USERHOST": people.do_userhost, "ISON": people.do_ison,
    "USER": lambda reader, params: reader.reply("462", "You may not reregister"),
    "PASS": lambda reader, params: reader.reply("462", "You may not reregister"),
    "AUTHENTICATE": lambda reader, params: reader.reply("907", "You have already authenticated"),
    **operators.COMMANDS,
}
#: Commands that relay what their sender says, whose handlers also get its client-only tags.
RELAYING = frozenset(("PRIVMSG", "NOTICE", "TAGMSG"))
#: Parameters a command needs (461 otherwise).
NEEDS = {"JOIN": 1, "PART": 1, "TOPIC": 1, "KICK": 2, "INVITE": 2, "MODE": 1, "PRIVMSG": 1,
         "TAGMSG": 1,
         "NICK": 1, "WHOIS": 1, "WHOWAS": 1, "PING": 1, "USERHOST": 1, "ISON": 1,
         **operators.NEEDS}
