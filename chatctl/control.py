"""chatctl's commands that steer the daemon's process: reload, upgrade, systemd-stop, shutdown."""

from __future__ import annotations

import click

from chatctl import format as fmt
from chatctl import systemd
from chatctl.errors import Refused
from chatctl.state import State, command, one_line, pass_state, to_json
from chatd.admin.protocol import RELOAD_WAIT_SECONDS


@command(short_help='Re-read the configuration file, as SIGHUP does.')
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


@command(short_help="Replace chatd with the installed one; nobody is disconnected.")
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
    click.echo(to_json(result) if state.as_json else "\n".join(fmt.upgraded(result)))


def _restart_through_systemd(state: State, unit: str, asked: dict, timeout: float) -> dict:
    """``systemctl restart UNIT``, then the new process's status: what ``upgraded`` prints."""
    error = systemd.restart(unit, timeout)
    if error:
        raise Refused(one_line(error), "upgrade_failed", state.as_json)
    state.close()  # that chatd is gone; ask the new one
    status = state.request("status")
    return {"old_pid": asked.get("old_pid"), "new_pid": status.get("pid"),
            "old_version": asked.get("old_version"), "new_version": status.get("version"),
            "clients": status.get("clients"), "via": "systemd", "unit": unit}


@command("systemd-stop",
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


@command(short_help='Stop chatd gracefully, as SIGTERM does.')
@pass_state
def shutdown(state: State) -> None:
    """Stop chatd gracefully, as SIGTERM does: clients are told, then disconnected."""
    state.run("shutdown", fmt.shutting_down)


COMMANDS = (reload, upgrade, systemd_stop, shutdown)
