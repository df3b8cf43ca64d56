"""chatctl's command line (click). A stub until the admin socket exists: it only prints help.

This layer will format replies and map errors to exit codes; talking to the socket belongs to
the client library, which never prints.
"""

from __future__ import annotations

import click

from chatd import __version__


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="chatctl", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Administer a running chatd over its admin socket.

    The admin commands (status, list, kick, broadcast, rooms, ban, unban, bans, mute, unmute,
    reload, shutdown) arrive together with the admin socket.
    """
    # click >= 8.2 exits 2 for a bare group; a stub that has no commands yet should just help.
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
