"""chatctl's commands that act: kick, mute, unmute, broadcast, ban, unban, purge."""

from __future__ import annotations

import sys

import click

from chatctl import format as fmt
from chatctl.params import TARGET, Duration, complete_room
from chatctl.state import State, command, pass_state


@command(short_help='Disconnect a client, telling it and its room why.')
@click.argument("target", type=TARGET)
@click.option("-r", "--reason", metavar="TEXT", help="Told to the client and to its room.")
@pass_state
def kick(state: State, target, reason: str | None) -> None:
    """Disconnect a client.

    The client gets "*** you were kicked: REASON", its room "*** NICK was kicked (REASON)".

    \b
      chatctl kick alice -r "please stop"
      chatctl kick 42
    """
    state.run("kick", fmt.kicked, target=target, reason=reason)


@command(short_help='Send "*** [admin] TEXT" to everyone or to one room.')
@click.option("--room", metavar="ROOM", shell_complete=complete_room,
              help="Only to the members of ROOM (default: everyone).")
@click.argument("text", nargs=-1, required=True)
@pass_state
def broadcast(state: State, room: str | None, text: tuple[str, ...]) -> None:
    """Send "*** [admin] TEXT" to every client, or to one room.

    The words of TEXT are joined with spaces; put -- before a text that starts with a dash.

    \b
      chatctl broadcast server restarts at 18:00
      chatctl broadcast --room dev -- -- build is green again --
    """
    message = " ".join(text)
    if not message.strip():
        raise click.BadParameter("the text is empty", param_hint="TEXT")
    state.run("broadcast", fmt.broadcast, text=message, room=room)


@command(short_help='Ban an address or network and disconnect its clients.')
@click.argument("address")
@click.option("-d", "--duration", type=Duration(), metavar="SECONDS",
              help="Lift the ban after this long: seconds, or 90m, 12h, 7d, 1w.  "
                   "[default: never]")
@click.option("-r", "--reason", metavar="TEXT",
              help="Why (shown by `chatctl bans` and to the banned clients).")
@click.option("--force", is_flag=True,
              help="Ban the network of an ADDRESS/PREFIX that has host bits set.")
@pass_state
def ban(state: State, address: str, duration, reason: str | None, force: bool) -> None:
    """Refuse connections from an IP address or network, and disconnect its clients now.

    ADDRESS is an IPv4 or IPv6 address or a CIDR network. A network with host bits set
    (127.0.0.1/0, which would ban 0.0.0.0/0: everyone) is refused unless --force is given.
    Banned clients see "*** error: banned (REASON; until TIME UTC)". Bans are saved in chatd's
    state directory and survive a restart.

    \b
      chatctl ban 192.0.2.7 -r "spam"
      chatctl ban 2001:db8::/32 -d 7d
    """
    state.run("ban", fmt.banned, address=address, duration=duration, reason=reason,
              force=force or None)


@command(short_help='Lift a ban.')
@click.argument("address")
@pass_state
def unban(state: State, address: str) -> None:
    """Lift the ban on ADDRESS (an address or network, as `chatctl bans` shows it)."""
    state.run("unban", fmt.unbanned, address=address)


@command(short_help="Delete a room's history.")
@click.argument("room")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first (asked only on a terminal).")
@pass_state
def purge(state: State, room: str, yes: bool) -> None:
    """Delete every stored line of ROOM, in memory and on disk (there is no undo: on a
    terminal chatctl asks first)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every stored line of {room}? There is no undo", abort=True)
    state.run("purge", fmt.purged, room=room)


@command(short_help="Stop delivering a client's messages.")
@click.argument("target", type=TARGET)
@pass_state
def mute(state: State, target) -> None:
    """Stop delivering a client's messages.

    The client is told "*** you are muted" (and "*** error: you are muted" whenever it
    tries to talk); `chatctl unmute` tells it "*** you are no longer muted".
    """
    state.run("mute", fmt.muted, target=target)


@command()
@click.argument("target", type=TARGET)
@pass_state
def unmute(state: State, target) -> None:
    """Deliver a muted client's messages again."""
    state.run("unmute", fmt.muted, target=target)


COMMANDS = (kick, mute, unmute, broadcast, ban, unban, purge)
