"""The IRC commands on channels (docs/protocol.md §14): JOIN, PART, NAMES, TOPIC, LIST, KICK,
INVITE and MODE. Each acts through the hub's room doors (membership, stewardship), as the
line protocol's commands do, and answers in numerics; the room lines that result (a JOIN, a
TOPIC, a MODE) reach the client as every member's do."""

from __future__ import annotations

from chatd.core.events import TopicIs
from chatd.core.hub import LOBBY
from chatd.core.roomstate import MODES
from chatd.irc import people
from chatd.irc.render import mask
from chatd.irc.targets import member_room, my_room, refused, room_name, targets
from chatd.text import NAME_RULE, fold, sanitize


def do_join(reader, params: tuple) -> None:
    if params[0] == "0":  # leave every channel
        for room in reader.client.rooms:
            do_part(reader, ("#" + room.name,))
        return
    keys = params[1].split(",") if len(params) > 1 else []
    for index, target in enumerate(targets(params[0])):
        name = room_name(target)
        if name is None:
            reader.reply("403", target[:30], f"No such channel ({NAME_RULE}, after #)")
            continue
        if member_room(reader, name) is not None:
            continue  # already there: nothing happens (RFC 2812 §3.2.1)
        problem = reader.hub.enter(reader.client, name, keys[index] if index < len(keys) else "",
                                   reader.places.pop(fold(name), None))
        if problem:
            refused(reader, problem, "#" + name)
            continue
        send_names(reader, name)
        client, accounts = reader.client, reader.settings.accounts
        reader.session.log.info("room_joined", room=name, nick=client.nick)
        if client.account is not None and accounts is not None:
            accounts.here(client.account, [room.name for room in client.rooms])


def do_part(reader, params: tuple) -> None:
    reason = sanitize(params[1]) if len(params) > 1 and params[1] else None
    for target in targets(params[0]):
        name = room_name(target)
        room = member_room(reader, name) if name else None
        if room is None:
            reader.reply("442" if name else "403", target[:30], "You're not on that channel")
            continue
        problem = reader.hub.part(reader.client, room.name, reason)
        if problem:
            refused(reader, problem, target)
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
    for target in targets(params[0]):
        name = room_name(target)
        if name is None:
            reader.reply("366", target[:30], "End of /NAMES list.")
        else:
            send_names(reader, name)


def do_topic(reader, params: tuple) -> None:
    room = my_room(reader, params[0])
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
        refused(reader, problem, "#" + room.name)


def do_list(reader, params: tuple) -> None:
    wanted = {fold(n) for n in (room_name(t) for t in targets(params[0])) if n} if params else None
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
    room = my_room(reader, params[0])
    if room is None:
        return
    reason = sanitize(params[2]) if len(params) > 2 and params[2] else reader.client.nick
    for nick in targets(params[1]):
        problem = reader.hub.kick_from_room(reader.client, room.name, nick, reason)
        if problem:
            refused(reader, problem, nick, "#" + room.name)


def do_invite(reader, params: tuple) -> None:
    nick, room = params[0], my_room(reader, params[1])
    if room is None:
        return
    client, state = reader.client, room.state
    if "i" in state.modes and not state.is_op(client.id, client.nick, client.account):
        reader.reply("482", "#" + room.name, "You're not channel operator")
        return  # (an invite-only room's invitations are its operators', as IRC has it)
    problem = reader.hub.invite(reader.client, room.name, nick)
    if problem:
        refused(reader, problem, nick, "#" + room.name)
    else:
        reader.reply("341", nick, "#" + room.name)


def do_mode(reader, params: tuple) -> None:
    target = params[0]
    if not target.startswith("#"):
        people.user_mode(reader, target, params[1] if len(params) > 1 else None)
        return
    room = my_room(reader, target)
    if room is None:
        return
    if len(params) == 1:
        state = room.state  # (324's modes and the limit as parameters of their own)
        limit = f" {state.limit}" if "l" in state.modes else ""
        reader.send(f":{reader.protocol.server} 324 {reader.nick} #{room.name} "
                    f"+{state.modes}{limit}")
        reader.reply("329", "#" + room.name, str(int(room.created)))
        return
    simple: list = []  # the room's own modes, made together: one MODE line (set_modes)
    for change, argument in mode_changes(params[1], list(params[2:])):
        if change[1] in MODES:
            if change[1] in "kl" and change[0] == "+" and not argument:
                continue  # (+k or +l without its argument: nothing to set)
            simple.append((change, argument or ""))
            continue
        _set_modes(reader, room, simple)
        simple = []
        _change_mode(reader, room, change, argument)
    _set_modes(reader, room, simple)


def _set_modes(reader, room, changes: list) -> None:
    """The room's own modes (``+int``, ``+l 5``), made as one: one MODE line to the room;
    each refusal told as its numeric."""
    if not changes:
        return
    channel = "#" + room.name
    for problem in reader.hub.set_modes(reader.client, room.name, changes):
        if problem.startswith("usage: /mode +l"):
            argument = next((key for change, key in changes if change == "+l"), "*")
            reader.reply("696", channel, "l", argument or "*", "Invalid limit mode parameter")
        elif "already" not in problem:
            refused(reader, problem, channel)


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


def mode_changes(spec: str, arguments: list) -> list[tuple[str, str | None]]:
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
        for entry in sorted(room.state.bans):  # RFC 2812's form: no setter or time is kept
            reader.reply("367", channel, f"{entry}!*@*")
        reader.reply("368", channel, "End of channel ban list")
        return
    if letter in "ov":
        if argument is None or not _in_room(reader, argument, channel):
            return
        problem = hub.grant(client, room.name, "ops" if letter == "o" else "voiced",
                            argument, on)
    elif letter == "b":
        problem = hub.ban(client, room.name, argument.split("!")[0], on)
    else:
        reader.reply("472", letter, "is unknown mode char to me")
        return
    if problem and "already" not in problem:
        refused(reader, problem, channel)
