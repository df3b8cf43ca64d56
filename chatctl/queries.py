"""chatctl's commands that only ask: status, list, nodes, rooms, bans, history."""

from __future__ import annotations

import click

from chatctl import format as fmt
from chatctl.params import complete_room
from chatctl.state import State, command, pass_state


@command()
@pass_state
def status(state: State) -> None:
    """Show version, pid, uptime, listen address and traffic counters."""
    state.run("status", fmt.status)


@command("list")
@click.option("--room", metavar="ROOM", shell_complete=complete_room,
              help="Only the members of ROOM.")
@click.option("--local", is_flag=True, help="Cluster mode: only this node's clients.")
@pass_state
def list_(state: State, room: str | None, local: bool) -> None:
    """List connected clients as a table.

    Columns: ID, NICK, PEER (address:port), ROOM, CONNECTED (UTC), IDLE (time since
    chatd last received anything from the client), SENDQ (bytes of output waiting to be
    sent to it) and MUTED (yes/no); in cluster mode a last column NODE, and other nodes'
    clients without IDLE, SENDQ and MUTED (only their node has those). A ROOM that does not
    exist is an error (exit 1).
    """
    state.run("list", fmt.clients, room=room, local=local or None)


@command()
@pass_state
def nodes(state: State) -> None:
    """Cluster mode: the live nodes (NODE ADDRESS CLIENTS UPTIME LAST-SEEN); one row alone
    on a single node."""
    state.run("nodes", fmt.nodes)


@command()
@pass_state
def rooms(state: State) -> None:
    """List rooms and how many members each has."""
    state.run("rooms", fmt.rooms)


@command()
@pass_state
def bans(state: State) -> None:
    """List bans: address, when each expires (UTC) and why."""
    state.run("bans", fmt.bans)


@command(short_help="Print a room's history.")
@click.argument("room")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest lines (at most the daemon's history_lines).")
@pass_state
def history(state: State, room: str, lines: int) -> None:
    """Print the newest stored lines of ROOM, oldest first, as /history shows them (UTC)."""
    state.run("history", fmt.history, room=room, lines=lines)


COMMANDS = (status, list_, nodes, rooms, bans, history)
