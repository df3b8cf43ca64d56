"""chatctl's command line (click): the root group, its options and exit statuses.

Runs in the main thread of a short-lived process. The commands are in :mod:`chatctl.queries`,
:mod:`chatctl.actions`, :mod:`chatctl.control`, :mod:`chatctl.watch` and
:mod:`chatctl.accounts`, what they share in :mod:`chatctl.state`; talking to the socket
belongs to :class:`chatctl.client.AdminClient` (which never prints), the human formats to
:mod:`chatctl.format` (pure functions), the failure messages to :mod:`chatctl.errors`. Each
command only builds the request's arguments and picks a format. The exit statuses are the
contract of docs/protocol.md §7:

    0  done
    1  the daemon answered and refused (``chatctl: error: MESSAGE`` on stderr)
    2  usage error (click's own message)
    3  the daemon cannot be reached (``chatctl: cannot reach chatd at PATH: WHY``)

With ``--json`` those messages go to stderr as one JSON object instead,
``{"error": {"code": CODE, "message": TEXT}}`` (the daemon's error code for exit 1; for exit 3
``no_socket``, ``connection_refused``, ``permission_denied``, ``busy`` or ``unreachable``, and
``socket`` names the path); the exit statuses are the same. Usage errors stay click's text.

No traceback reaches the user: anything unexpected is one ``chatctl: internal error`` line.
"""

from __future__ import annotations

import errno

import click

from chatctl import accounts, actions, control, queries, rooms, watch
from chatctl.client import DEFAULT_TIMEOUT
from chatctl.errors import InternalError
from chatctl.state import State, one_line
from chatd import __version__
from chatd.admin.protocol import ENV_SOCKET


class _Group(click.Group):
    """The root group: whatever goes wrong inside a command ends as one line, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `chatctl list | head`: click handles it quietly
                raise
            raise _internal(ctx, exc) from None
        except Exception as exc:  # noqa: BLE001 - the promise is "no tracebacks ever"
            raise _internal(ctx, exc) from None


def _internal(ctx: click.Context, exc: BaseException) -> InternalError:
    as_json = isinstance(ctx.obj, State) and ctx.obj.as_json
    return InternalError(one_line(f"{type(exc).__name__}: {exc}"), "internal_error", as_json)




@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.option("-s", "--socket", "socket_path", metavar="PATH", envvar=ENV_SOCKET,
              show_envvar=True,
              help="The daemon's admin socket.  [default: see above]")
@click.option("--json", "as_json", is_flag=True,
              help="Print the daemon's answer as JSON (for scripts) instead of text.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              metavar="SECONDS", help=f"How long to wait for the daemon.  [default: "
                                      f"{DEFAULT_TIMEOUT:g}]")
@click.version_option(__version__, "--version", prog_name="chatctl", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, socket_path: str | None, as_json: bool, timeout: float) -> None:
    """Administer a running chatd through its admin socket.

    Each command asks the daemon once and prints its answer for people, or with --json the
    answer's result as JSON, for scripts. A TARGET is a client's numeric id or its nick (see
    `chatctl list`).

    \b
    Examples:
      chatctl status
      chatctl list --room lobby
      chatctl kick alice -r "flooding the lobby"
      chatctl broadcast --room dev maintenance in 5 minutes
      chatctl ban 203.0.113.0/24 -d 12h -r "spam wave"
      chatctl account add alice
      chatctl room topic dev "release on friday"
      sudo chatctl --json list | jq -r '.[].nick'

    \b
    Without --socket or $CHATD_ADMIN_SOCKET, chatctl uses the first of these that exists,
    the order in which chatd picks its default (so `sudo chatctl` finds a systemd chatd):
      $RUNTIME_DIRECTORY/admin.sock
      /run/chatd/admin.sock           (as root)
      $XDG_RUNTIME_DIR/chatd/admin.sock
      /tmp/chatd-UID/admin.sock
      /run/chatd/admin.sock           (not as root: for admin group members)

    \b
    Exit status:
      0  done
      1  chatd refused (no such client, invalid address, ...); its message is on stderr
      2  usage error
      3  chatd cannot be reached (no socket, stale socket, permission denied, busy)
    With --json, these errors are JSON on stderr: {"error": {"code": ..., "message": ...}}.
    """
    ctx.obj = State(socket_path, as_json, timeout)
    ctx.call_on_close(ctx.obj.close)


for _topic in (queries, actions, control, watch, accounts, rooms):
    for _command in _topic.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main(prog_name="chatctl")
