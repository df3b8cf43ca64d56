"""The admin commands on rooms (SPEC §13, docs/protocol.md §6): room_show, room_op,
room_deop, room_topic, room_mode, room_delete: an operator's override of any room's owners,
topic and modes, whoever its operators are (core/stewardship.py ``admin_room``; the room is
told the change was made by ``[admin]``).

On a single node for now: in cluster mode a room's state is the node's own (docs/protocol.md
§13), so these act on the node whose socket is used.
"""

from __future__ import annotations

from chatd.admin.protocol import AdminError
from chatd.core.roomstate import MAX_TOPIC
from chatd.text import NAME_RULE, is_valid_name


def do_room_show(ctx, room: str) -> dict:
    found = ctx.hub.room_state(_name(room))
    if found is None:
        raise AdminError("not_found", f"no such room {room}")
    name, state, members = found
    return describe(name, state, members)


def do_room_op(ctx, room: str, nick: str) -> dict:
    return _change(ctx, room, "op", _name(nick))


def do_room_deop(ctx, room: str, nick: str) -> dict:
    return _change(ctx, room, "deop", _name(nick))


def do_room_topic(ctx, room: str, text: str) -> dict:
    if len(text) > MAX_TOPIC or not text.isprintable():
        raise AdminError("bad_args", f"a topic is at most {MAX_TOPIC} printable characters")
    return _change(ctx, room, "topic", text)


def do_room_mode(ctx, room: str, change: str, key: str = "") -> dict:
    return _change(ctx, room, "mode", change, key)


def do_room_delete(ctx, room: str) -> dict:
    return _change(ctx, room, "delete")


def describe(name: str, state, members: list[str]) -> dict:
    """What an operator sees of a room: never its key, only whether it has one."""
    return {"room": name, "registered": state.registered, "founder": state.founder,
            "topic": state.topic, "topic_by": state.topic_by or None,
            "modes": state.modes, "ops": sorted(state.ops), "voiced": sorted(state.voiced),
            "bans": sorted(state.bans), "invites": sorted(state.invites), "members": members}


def _change(ctx, room: str, verb: str, *args) -> dict:
    problem = ctx.hub.admin_room(_name(room), verb, *args)
    if problem is not None:
        raise AdminError("not_found" if problem.startswith("no such room") else "refused",
                         problem)
    found = ctx.hub.room_state(room)
    if found is None:  # deleted, and it was empty
        return {"room": room, "deleted": True}
    return describe(*found)


def _name(value: str) -> str:
    value = value.removeprefix("#")
    if not is_valid_name(value):
        raise AdminError("bad_args", f"invalid name {value[:32]!r} ({NAME_RULE})")
    return value
