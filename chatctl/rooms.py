"""chatctl's ``room`` commands (SPEC §13): show, op, deop, topic, mode, delete. An operator
overrides any room's operators, topic and modes, whoever runs the room; its members see the
change as made by ``[admin]``.
"""

from __future__ import annotations

import sys

import click

from chatctl import format as fmt
from chatctl.state import State, group, pass_state


@group(short_help="Override a room: show, op, deop, topic, mode, delete.")
def room() -> None:
    """Show and override the state of a room: its founder, operators, topic and modes.

    \b
      chatctl room show dev
      chatctl room op dev alice          # alice (her account, if logged in) runs dev too
      chatctl room topic dev "release on friday"
      chatctl room mode dev -i
      chatctl room delete dev            # dev belongs to nobody and forgets its state
    """


@room.command(short_help="Show a room's founder, operators, topic and modes.")
@click.argument("name")
@pass_state
def show(state: State, name: str) -> None:
    """Show room NAME: founder (registered rooms), topic, modes, operators, voiced members,
    bans, invitations, members. A key (+k) is never shown."""
    state.run("room_show", fmt.room, room=name)


@room.command(short_help="Make a nick or account an operator of a room.")
@click.argument("name")
@click.argument("nick")
@pass_state
def op(state: State, name: str, nick: str) -> None:
    """Make NICK an operator of room NAME: its account if it is logged in, else the nick."""
    state.run("room_op", fmt.room, room=name, nick=nick)


@room.command(short_help="Take a room's operator status from a nick or account.")
@click.argument("name")
@click.argument("nick")
@pass_state
def deop(state: State, name: str, nick: str) -> None:
    state.run("room_deop", fmt.room, room=name, nick=nick)


@room.command(short_help="Set a room's topic.")
@click.argument("name")
@click.argument("text")
@pass_state
def topic(state: State, name: str, text: str) -> None:
    state.run("room_topic", fmt.room, room=name, text=text)


@room.command(short_help="Change a room's modes: +i -i +k KEY -k +m -m +t -t.")
@click.argument("name")
@click.argument("change")
@click.argument("key", required=False)
@pass_state
def mode(state: State, name: str, change: str, key: str | None) -> None:
    """Change one mode of room NAME: +i/-i invite-only, +k KEY/-k keyed, +m/-m moderated,
    +t/-t topic set by operators only. (A mode starting with - may need `--` before it:
    chatctl room mode -- dev -i.)"""
    state.run("room_mode", fmt.room, room=name, change=change, key=key)


@room.command(short_help="Unregister a room: it belongs to nobody and forgets its state.")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first (asked only on a terminal).")
@pass_state
def delete(state: State, name: str, yes: bool) -> None:
    """Room NAME belongs to nobody any more: its founder, operators, topic, modes and lists
    are forgotten. Its members stay; an empty room goes."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Forget everything about room {name}?", abort=True)
    state.run("room_delete", fmt.room, room=name)


COMMANDS = (room,)
