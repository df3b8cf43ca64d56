"""chatctl's command line (click): options, output and exit statuses, nothing else.

Runs in the main thread of a short-lived process. Talking to the socket belongs to
:class:`chatctl.client.AdminClient` (which never prints) and the human formats to
:mod:`chatctl.format` (pure functions), the failure messages to :mod:`chatctl.errors`; each
command here only builds the request's arguments and picks a format. The exit statuses are
the contract of docs/protocol.md §7:

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
import json
import re
import sys
import time
from collections.abc import Callable

import click

from chatctl import format as fmt
from chatctl import systemd
from chatctl.client import DEFAULT_TIMEOUT, AdminClient, AdminError, Unreachable
from chatctl.errors import CannotReach, InternalError, Lost, Refused, out_of_reach_hint
from chatd import __version__
from chatd.admin.protocol import ENV_SOCKET, RELOAD_WAIT_SECONDS, client_socket_path


def _json(result) -> str:
    """Indented JSON, except that a list has one compact object per line: as easy to read and
    grep, and fast for 10,000 clients (``indent=`` makes CPython skip its C encoder). A list
    inside an object (``history``'s ``lines``) is printed the same way, so every command that
    returns rows prints them alike (issue 23)."""
    if isinstance(result, list):
        return _rows(result, "")
    if isinstance(result, dict) and any(isinstance(v, list) for v in result.values()):
        fields = [f"  {json.dumps(key, ensure_ascii=False)}: "
                  + (_rows(value, "  ") if isinstance(value, list)
                     else json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  "))
                  for key, value in result.items()]
        return "{\n" + ",\n".join(fields) + "\n}"
    return json.dumps(result, indent=2, ensure_ascii=False)


def _rows(items: list, margin: str) -> str:
    """``items`` as a JSON array with one compact item per line, ``margin`` before each line."""
    if not items:
        return "[]"
    encode = json.JSONEncoder(ensure_ascii=False).encode  # one encoder, not one per item
    return f"[\n{margin}  " + f",\n{margin}  ".join(map(encode, items)) + f"\n{margin}]"


def _set_json(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_object(State).as_json = True


class _Command(click.Command):
    """Every command also takes --json after its name (``chatctl list --json``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--json"], is_flag=True, expose_value=False,
                                        callback=_set_json, help="Print the result as JSON."))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class State:
    """``ctx.obj``: the global options and, once a command needs it, the connection."""

    def __init__(self, socket_path: str | None, as_json: bool, timeout: float) -> None:
        self.defaulted = not socket_path  # neither --socket nor $CHATD_ADMIN_SOCKET
        self.socket_path = socket_path or client_socket_path()
        self.as_json = as_json
        self.timeout = timeout
        self._client: AdminClient | None = None

    def request(self, cmd: str, **args):
        """The reply's result; a refusal or an unreachable daemon becomes the exit status."""
        if self._client is None:
            self._client = AdminClient(self.socket_path, self.timeout)
        try:
            return self._client.request(cmd, **args)
        except (AdminError, Unreachable) as err:
            raise self._failure(err) from None

    def watch(self, room: str | None):
        """The events of ``chatctl watch``, failures mapped as for :meth:`request`."""
        if self._client is None:
            self._client = AdminClient(self.socket_path, self.timeout)
        try:
            yield from self._client.watch(room)
        except (AdminError, Unreachable) as err:
            raise self._failure(err) from None

    def _failure(self, err: Exception) -> click.ClickException:
        if isinstance(err, AdminError):
            return Refused(_one_line(err.message), err.code, self.as_json)
        if err.kind == "lost":
            return Lost(err, self.as_json)
        hint = None
        if err.kind == "no_socket" and self.defaulted:
            hint = out_of_reach_hint(err.path)
        return CannotReach(err, self.as_json, hint)

    def run(self, cmd: str, human: Callable[[object], list[str]], **args) -> None:
        """Ask, then print the result: as JSON with ``--json``, else as ``human`` formats it."""
        result = self.request(cmd, **{k: v for k, v in args.items() if v is not None})
        if self.as_json:
            click.echo(_json(result))
        else:
            for line in human(result):
                click.echo(line)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


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
    return InternalError(_one_line(f"{type(exc).__name__}: {exc}"), "internal_error", as_json)


# -- argument types and completion -------------------------------------------------------------


def _ask_quietly(ctx: click.Context, cmd: str) -> list:
    """For shell completion: the daemon's answer, or nothing (completion must never fail)."""
    params = ctx.find_root().params
    try:
        with AdminClient(params.get("socket_path") or client_socket_path(), timeout=1.0) as a:
            return a.request(cmd) or []
    except Exception:  # noqa: BLE001 - no daemon, no suggestions
        return []


def _complete_room(ctx, param, incomplete: str) -> list[str]:
    names = (r.get("name", "") for r in _ask_quietly(ctx, "rooms"))
    return [n for n in names if n.startswith(incomplete)]


class Target(click.ParamType):
    """A client: its numeric id (sent as a number) or its nick (sent as a string)."""

    name = "target"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not text:
            self.fail("a client id or nick is required", param, ctx)
        # Nicks never start with a digit (docs/protocol.md §1), so all digits can only be an id.
        return int(text) if re.fullmatch(r"[0-9]+", text) else text

    def shell_complete(self, ctx, param, incomplete: str):
        nicks = (c.get("nick", "") for c in _ask_quietly(ctx, "list"))
        return [click.shell_completion.CompletionItem(n) for n in nicks
                if n.startswith(incomplete)]


class Duration(click.ParamType):
    """Seconds, or a number with a unit: ``90s``, ``45m``, ``12h``, ``7d``, ``1w``, ``1h30m``."""

    name = "seconds"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        try:
            seconds = fmt.parse_duration(str(value))
        except ValueError:
            if str(value).strip().rstrip("smhdw") in ("0", "0.0"):  # `-d 0` for "forever"?
                self.fail(f"{value!r}: a ban lasts longer than 0; leave -d out for a ban with "
                          "no expiry", param, ctx)
            self.fail(f"{value!r} is not a duration (e.g. 3600, 90m, 12h, 7d)", param, ctx)
        return int(seconds) if seconds.is_integer() else seconds


TARGET = Target()

# -- the commands -------------------------------------------------------------------------------

pass_state = click.make_pass_decorator(State)


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


main.command_class = _Command


@main.command()
@pass_state
def status(state: State) -> None:
    """Show version, pid, uptime, listen address and traffic counters."""
    state.run("status", fmt.status)


@main.command("list")
@click.option("--room", metavar="ROOM", shell_complete=_complete_room,
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


@main.command()
@pass_state
def nodes(state: State) -> None:
    """Cluster mode: the live nodes (NODE ADDRESS CLIENTS UPTIME LAST-SEEN); one row alone
    on a single node."""
    state.run("nodes", fmt.nodes)


@main.command(short_help='Disconnect a client, telling it and its room why.')
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


@main.command(short_help='Send "*** [admin] TEXT" to everyone or to one room.')
@click.option("--room", metavar="ROOM", shell_complete=_complete_room,
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


@main.command()
@pass_state
def rooms(state: State) -> None:
    """List rooms and how many members each has."""
    state.run("rooms", fmt.rooms)


@main.command(short_help='Ban an address or network and disconnect its clients.')
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


@main.command(short_help='Lift a ban.')
@click.argument("address")
@pass_state
def unban(state: State, address: str) -> None:
    """Lift the ban on ADDRESS (an address or network, as `chatctl bans` shows it)."""
    state.run("unban", fmt.unbanned, address=address)


@main.command()
@pass_state
def bans(state: State) -> None:
    """List bans: address, when each expires (UTC) and why."""
    state.run("bans", fmt.bans)


@main.command(short_help="Print a room's history.")
@click.argument("room")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest lines (at most the daemon's history_lines).")
@pass_state
def history(state: State, room: str, lines: int) -> None:
    """Print the newest stored lines of ROOM, oldest first, as /history shows them (UTC)."""
    state.run("history", fmt.history, room=room, lines=lines)


@main.command(short_help="Delete a room's history.")
@click.argument("room")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first (asked only on a terminal).")
@pass_state
def purge(state: State, room: str, yes: bool) -> None:
    """Delete every stored line of ROOM, in memory and on disk (there is no undo: on a
    terminal chatctl asks first)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every stored line of {room}? There is no undo", abort=True)
    state.run("purge", fmt.purged, room=room)


@main.command(short_help="Stop delivering a client's messages.")
@click.argument("target", type=TARGET)
@pass_state
def mute(state: State, target) -> None:
    """Stop delivering a client's messages.

    The client is told "*** you are muted" (and "*** error: you are muted" whenever it
    tries to talk); `chatctl unmute` tells it "*** you are no longer muted".
    """
    state.run("mute", fmt.muted, target=target)


@main.command()
@click.argument("target", type=TARGET)
@pass_state
def unmute(state: State, target) -> None:
    """Deliver a muted client's messages again."""
    state.run("unmute", fmt.muted, target=target)


@main.command(short_help='Re-read the configuration file, as SIGHUP does.')
@pass_state
def reload(state: State) -> None:
    """Re-read the configuration file, as SIGHUP does.

    Limits, MOTD and log level apply at once and nobody is disconnected. If the new file is
    invalid the old settings stay in force and chatctl exits 1 with the reason. Settings
    bound at start (host, port, tls_port, TLS on or off, history_lines, metrics_host,
    metrics_port) need a restart: chatctl names them and still exits 0. chatctl waits as long
    as chatd does for its main thread (30 s), whatever --timeout says.
    """
    state.timeout = max(state.timeout, RELOAD_WAIT_SECONDS + 5)
    state.run("reload", fmt.reloaded)


@main.command(short_help="Replace chatd with the installed one; nobody is disconnected.")
@click.option("--wait", "step", type=click.FloatRange(0.5, 300), default=10.0, show_default=True,
              metavar="SECONDS", help="How long each step may take (the new chatd's start, "
              "stopping the old one's reading, the takeover) before the upgrade is called off.")
@pass_state
def upgrade(state: State, step: float) -> None:
    """Replace the running chatd with the chatd executable installed now, as SIGUSR2 does.

    The new process re-reads the configuration file and takes over the listening sockets,
    the admin socket, the pidfile and every plain client connection with its nick, room and
    unsent lines; clients notice nothing. TLS clients are asked to reconnect. If the new
    chatd cannot start (invalid config, a broken install, no answer in time) the old one
    goes on serving and chatctl exits 1 with the reason.

    Under systemd (as root): once the installed chatd accepts the config, chatctl runs
    systemctl restart on chatd's unit, which keeps every client through systemd's
    file-descriptor store.
    """
    state.timeout = max(state.timeout, 4 * step + 5)
    result = state.request("upgrade", timeout=step)
    unit = result.get("restart_unit") if isinstance(result, dict) else None
    if unit:  # under systemd: a restart, through the fd store (docs/protocol.md §9.1)
        result = _restart_through_systemd(state, unit, result, 4 * step + 5)
    click.echo(_json(result) if state.as_json else "\n".join(fmt.upgraded(result)))


def _restart_through_systemd(state: State, unit: str, asked: dict, timeout: float) -> dict:
    """``systemctl restart UNIT``, then the new process's status: what ``upgraded`` prints."""
    error = systemd.restart(unit, timeout)
    if error:
        raise Refused(_one_line(error), "upgrade_failed", state.as_json)
    state.close()  # that chatd is gone; ask the new one
    status = state.request("status")
    return {"old_pid": asked.get("old_pid"), "new_pid": status.get("pid"),
            "old_version": asked.get("old_version"), "new_version": status.get("version"),
            "clients": status.get("clients"), "via": "systemd", "unit": unit}


@main.command("systemd-stop",
              short_help="For ExecStop=: when systemd restarts chatd, keep every client.")
@click.argument("unit")
@pass_state
def systemd_stop(state: State, unit: str) -> None:
    """What chatd.service runs before systemd stops chatd (ExecStop=, as root).

    When the stop is part of a restart of UNIT (systemctl restart), chatd leaves its client
    connections, listening sockets and state in systemd's file-descriptor store and exits,
    and the chatd that systemd starts next takes them back: nobody is disconnected. Otherwise
    it does nothing, and the SIGTERM that follows shuts chatd down as usual.
    """
    if not systemd.restarting(unit):
        return
    state.timeout = max(state.timeout, 4 * 10.0 + 5)
    state.run("handover", fmt.handed_over)


@main.command(short_help="Stream chatd's events live, until Ctrl-C or chatd stops.")
@click.option("--room", metavar="ROOM", shell_complete=_complete_room,
              help="Only the events of ROOM (joins, leaves, messages, kicks there).")
@pass_state
def watch(state: State, room: str | None) -> None:
    """Stream chatd's events as they happen, one line each: connects, disconnects (with the
    reason), nick changes, joins, kicks, admin commands (bans, mutes, ...) and, only when
    chatd has log_messages = true, message texts.

    A line is the UTC time, the event and its fields (nick, room, reason first); with --json
    each line is the event as a JSON object. Ctrl-C ends it (exit 0); so does chatd stopping
    (a last "shutdown" event). An upgrade or a restart under systemd ("restarting") does not:
    chatctl subscribes again to the chatd that takes over (events in between are not shown).
    A watcher that reads too slowly is dropped ("watch_dropped", exit 1). If chatd goes away
    without a word (killed), or none is back within 30 s of "restarting", chatctl exits 3.

    \b
      chatctl watch
      chatctl watch --room dev
      chatctl watch --json | jq -c 'select(.event == "client_kicked")'
    """
    last = None
    try:
        for last in _across_restarts(state, room):
            click.echo(json.dumps(last, ensure_ascii=False) if state.as_json
                       else fmt.watch_event(last))
    except KeyboardInterrupt:  # Ctrl-C is how a watch is meant to end
        return
    if last is not None and last.get("event") == "watch_dropped":  # the final one: ours
        raise Refused("chatd dropped this watch: it read too slowly", "watch_dropped",
                      state.as_json)


#: How long ``chatctl watch`` waits for chatd to answer again after ``restarting``.
RESUBSCRIBE_SECONDS = 30.0
RESUBSCRIBE_POLL_SECONDS = 0.1


def _across_restarts(state: State, room: str | None):
    """The watch's events; after ``restarting`` (an upgrade or a restart through systemd's fd
    store) the same watch again, on the admin socket of the chatd that took over."""
    while True:
        last = None
        for last in state.watch(room):
            yield last
        if last is None or last.get("event") != "restarting":
            return
        state.close()
        _wait_for_chatd(state, time.monotonic() + RESUBSCRIBE_SECONDS)


def _wait_for_chatd(state: State, deadline: float) -> None:
    """Until chatd answers on the admin socket again (its successor binds or takes it over
    within a second or so); CannotReach (exit 3) at ``deadline``."""
    while True:
        try:
            state.request("status")
            return
        except (CannotReach, Lost):  # not there yet, or going away under our request
            if time.monotonic() >= deadline:
                raise
        state.close()
        time.sleep(RESUBSCRIBE_POLL_SECONDS)  # polling for the socket, bounded by deadline


@main.command(short_help='Stop chatd gracefully, as SIGTERM does.')
@pass_state
def shutdown(state: State) -> None:
    """Stop chatd gracefully, as SIGTERM does: clients are told, then disconnected."""
    state.run("shutdown", fmt.shutting_down)


if __name__ == "__main__":
    main(prog_name="chatctl")
