"""The slash commands of docs/protocol.md §1 as a table: name -> handler, usage, help.

The table checks arity once (``needs_args``) so handlers stay short. A handler gets the
:class:`~chatd.core.session.Session` of the client that typed the command (it uses ``session.client``,
``session.hub``, ``session.reply()``, ``session.error()``, ``session.may_speak()``,
``session.log``) and the argument text, already decoded and stripped of control characters.
Handlers reply with events (events.py), never with text: how a line looks is render.py's.
Runs on that client's session thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import (
    Acted,
    Bye,
    HelpLine,
    Members,
    PrivateMessage,
    PrivateSent,
    RoomListed,
)
from chatd.core.hub import LOBBY
from chatd.core.tagging import new_msgid
from chatd.line import accounts, ownership, social
from chatd.line.parse import Command, split_word
from chatd.text import NAME_RULE, fold, is_valid_name

CLUSTER_UNAVAILABLE = "cluster unavailable, try again"


@dataclass(frozen=True)
class Spec:
    handler: Callable
    usage: str
    help: str
    needs_args: bool = False
    #: Listed by /help only where there are accounts (a hub may run without them).
    account: bool = False


def dispatch(session, command: Command) -> None:
    spec = COMMANDS.get(command.name)
    if not session.client.nick and command.name not in accounts.BEFORE_LOGIN:
        session.error(accounts.LOGIN_FIRST)  # a closed server's connection, not logged in
    elif spec is None:
        session.error(f"unknown command /{command.name} (try /help)")
    elif spec.needs_args and not command.args:
        session.error(f"usage: {spec.usage}")
    else:
        spec.handler(session, command.args)


def do_nick(session, name: str) -> None:
    if not is_valid_name(name):
        session.error(f"invalid nick {name} ({NAME_RULE})")
        return
    old = session.client.nick
    owned = _owned_by_another(session, name)
    if owned is None:
        session.error(session.settings.accounts.unavailable)
        return
    if owned:
        session.error(f"nick {name} is registered; /login {name} PASSWORD")
        return
    try:
        problem = session.hub.rename(session.client, name)
    except ClusterUnavailable:
        problem = CLUSTER_UNAVAILABLE
    if problem:
        session.error(problem)
    else:
        room = session.client.room
        session.log.info("nick_changed", old=old, new=name, nick=name,
                         room=room.name if room is not None else None)


def _owned_by_another(session, name: str) -> bool | None:
    """Whether ``name`` is an account that is not the client's own (a store read, before
    any lock; SPEC §12: a registered nick cannot be taken by anyone else); None if the
    store cannot say now."""
    registry = session.settings.accounts
    if registry is None or fold(name) in (fold(session.client.nick),
                                          fold(session.client.account or "")):
        return False
    return registry.registered(name)


def do_join(session, args: str) -> None:
    """``/join ROOM [KEY]``."""
    name, key = split_word(args)
    name = name.removeprefix("#")
    if not name:
        session.error(f"invalid room name ({NAME_RULE})")
        return
    if not is_valid_name(name):
        session.error(f"invalid room {name} ({NAME_RULE})")
        return
    before = session.client.room
    problem = session.hub.join(session.client, name, key)
    if problem:
        session.error(problem)
    else:
        client = session.client
        session.log.info("room_joined", room=client.room.name, nick=client.nick,
                         left=before.name if before is not None else None)
        if client.account is not None and session.settings.accounts is not None:
            session.settings.accounts.here(client.account, [r.name for r in client.rooms])


def do_part(session, _args: str) -> None:
    """``/part``: leave the room for the lobby (a line client is always in a room)."""
    room = session.client.room
    if room is None or fold(room.name) == LOBBY:
        session.error(f"you are in {LOBBY}; /quit leaves the server")
        return
    do_join(session, LOBBY)


def do_rooms(session, _args: str) -> None:
    rooms = session.hub.rooms()
    session.reply(*(RoomListed(name, count) for name, count in rooms))


def do_who(session, _args: str) -> None:
    room, nicks = session.hub.who(session.client)
    session.reply(Members(room, tuple(nicks)))


def do_msg(session, args: str) -> None:
    nick, text = split_word(args)
    if not text:
        session.error("usage: /msg NICK TEXT")
        return
    recipient = session.hub.recipient(nick)
    if recipient is None:
        session.error(f"no such nick {nick}")
        return
    if not session.may_speak():
        return
    target, send = recipient
    away = send(PrivateMessage(session.client.nick, text, new_msgid(), "",
                               session.client.account))
    session.client.private_messages += 1
    session.reply(PrivateSent(target, text), *((away,) if away is not None else ()))
    session.log_message(text, to=target)


def do_me(session, text: str) -> None:
    if not session.may_say():
        return
    session.hub.say(session.client, Acted(session.client.nick, text, new_msgid(), "",
                                          session.client.account))
    session.log_message(text, action=True)


HISTORY_DEFAULT = 20


def do_history(session, args: str) -> None:
    """``/history [N]`` (SPEC §10): default 20, at most ``history_lines``."""
    limit = session.settings.config.history_lines
    if args and not (args.isascii() and args.isdigit() and int(args) > 0):
        session.error("usage: /history [N] (N a positive number)")
        return
    count = min(int(args) if args else HISTORY_DEFAULT, limit)
    if not session.hub.history(session.client, count):
        session.error("history is off on this server")


def do_quit(session, reason: str) -> None:
    session.reply(Bye())
    session.quit(Close("quit", reason))


def do_help(session, _args: str) -> None:
    accounts_here = session.settings.accounts is not None
    session.reply(
        *(HelpLine(spec.usage, spec.help) for spec in COMMANDS.values()
          if accounts_here or not spec.account),
        HelpLine("//TEXT", "send a message that starts with /"),
    )


COMMANDS: dict[str, Spec] = {
    "nick": Spec(do_nick, "/nick NAME", "change your nick", needs_args=True),
    "join": Spec(do_join, "/join ROOM", "leave this room and enter ROOM", needs_args=True),
    "part": Spec(do_part, "/part", "leave this room for the lobby"),
    "rooms": Spec(do_rooms, "/rooms", "list the rooms"),
    "list": Spec(ownership.do_list, "/list", "list the rooms with their topics"),
    "topic": Spec(ownership.do_topic, "/topic [TEXT]", "show or set this room's topic"),
    "who": Spec(do_who, "/who", "list the members of this room"),
    "msg": Spec(do_msg, "/msg NICK TEXT", "send a private message", needs_args=True),
    "me": Spec(do_me, "/me TEXT", "describe an action", needs_args=True),
    "away": Spec(social.do_away, "/away [TEXT]", "say you are away (a /msg is answered)"),
    "back": Spec(social.do_back, "/back", "say you are back"),
    "whois": Spec(social.do_whois, "/whois NICK", "who NICK is, where, idle, away",
                  needs_args=True),
    "ignore": Spec(social.do_ignore, "/ignore NICK", "stop getting NICK's lines and messages",
                   needs_args=True),
    "unignore": Spec(social.do_unignore, "/unignore NICK", "get NICK's lines again",
                     needs_args=True),
    "ignores": Spec(social.do_ignores, "/ignores", "list whom you ignore"),
    "op": Spec(ownership.do_op, "/op NICK", "make NICK an operator of this room",
               needs_args=True),
    "deop": Spec(ownership.do_deop, "/deop NICK", "take operator status from NICK",
                 needs_args=True),
    "voice": Spec(ownership.do_voice, "/voice NICK", "let NICK speak in this moderated room",
                  needs_args=True),
    "devoice": Spec(ownership.do_devoice, "/devoice NICK", "take voice from NICK",
                    needs_args=True),
    "kick": Spec(ownership.do_kick, "/kick NICK [REASON]", "send NICK out of this room",
                 needs_args=True),
    "ban": Spec(ownership.do_ban, "/ban NICK", "keep NICK (or its account) out of this room",
                needs_args=True),
    "unban": Spec(ownership.do_unban, "/unban NICK", "lift a ban", needs_args=True),
    "mode": Spec(ownership.do_mode, "/mode [+i|-i|+k KEY|-k|+m|-m|+t|-t]",
                 "show or change this room's modes"),
    "invite": Spec(ownership.do_invite, "/invite NICK", "let NICK into this invite-only room",
                   needs_args=True),
    "register-room": Spec(ownership.do_register_room, "/register-room",
                          "make this room yours (logged in)", account=True),
    "history": Spec(do_history, "/history [N]", "show the last N lines of this room (20)"),
    "register": Spec(accounts.do_register, "/register PASSWORD", "make your nick an account",
                     needs_args=True, account=True),
    "login": Spec(accounts.do_login, "/login NICK PASSWORD", "log in to your account",
                  needs_args=True, account=True),
    "logout": Spec(accounts.do_logout, "/logout", "log out (a guest again)",
                   account=True),
    "password": Spec(accounts.do_password, "/password OLD NEW", "change your password",
                     needs_args=True, account=True),
    "quit": Spec(do_quit, "/quit [REASON]", "leave the server"),
    "help": Spec(do_help, "/help", "show this list"),
}
