"""The room commands of the line protocol (SPEC §13, docs/protocol.md §13.4): ``/topic``,
``/op``, ``/deop``, ``/voice``, ``/devoice``, ``/kick``, ``/ban``, ``/unban``, ``/mode``,
``/invite``, ``/register-room`` and ``/list``. Each acts on the sender's room; the hub
(core/stewardship.py) checks that it is an operator there and tells the room.
"""

from __future__ import annotations

from chatd.core.events import Inviting, Modes, NoTopic, RoomListedTopic, TopicIs
from chatd.line.parse import split_word
from chatd.text import is_valid_name

#: What ``/kick`` says when no reason is given.
KICK_REASON = "no reason given"


def do_topic(session, text: str) -> None:
    room = session.client.room
    if not text:
        topic = room.state.topic
        session.reply(TopicIs(room.name, topic) if topic else NoTopic(room.name))
        return
    _done(session, session.hub.set_topic(session.client, room.name, text))


def _granting(what: str, on: bool):
    def handler(session, nick: str) -> None:
        if _valid(session, nick):
            _done(session, session.hub.grant(session.client, session.client.room.name, what,
                                             nick, on))
    return handler


def _banning(on: bool):
    def handler(session, nick: str) -> None:
        if _valid(session, nick):
            _done(session, session.hub.ban(session.client, session.client.room.name, nick, on))
    return handler


def do_kick(session, args: str) -> None:
    nick, reason = split_word(args)
    if _valid(session, nick):
        _done(session, session.hub.kick_from_room(session.client, session.client.room.name,
                                                  nick, reason or KICK_REASON))


def do_mode(session, args: str) -> None:
    """``/mode`` shows the room's modes; ``/mode +i|-i|+k KEY|-k|+m|-m|+t|-t`` sets one."""
    room = session.client.room
    if not args:
        session.reply(Modes(room.name, room.state.modes))
        return
    change, key = split_word(args)
    _done(session, session.hub.set_mode(session.client, room.name, change, key))


def do_invite(session, nick: str) -> None:
    if _valid(session, nick):
        room = session.client.room
        problem = session.hub.invite(session.client, room.name, nick)
        if problem:
            session.error(problem)
        else:
            session.reply(Inviting(nick, room.name))


def do_register_room(session, _args: str) -> None:
    _done(session, session.hub.register_room(session.client, session.client.room.name))


def do_list(session, _args: str) -> None:
    session.reply(*(RoomListedTopic(name, count, topic)
                    for name, count, topic in session.hub.listing()))


def _valid(session, nick: str) -> bool:
    if is_valid_name(nick):
        return True
    session.error(f"no such nick {nick}")
    return False


def _done(session, problem: str | None) -> None:
    """The hub's answer: an error for the sender, or nothing (the room was told, the
    sender with it)."""
    if problem:
        session.error(problem)


do_op, do_deop = _granting("ops", True), _granting("ops", False)
do_voice, do_devoice = _granting("voiced", True), _granting("voiced", False)
do_ban, do_unban = _banning(True), _banning(False)
