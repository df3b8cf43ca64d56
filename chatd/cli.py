"""The `chatd` command: parse options, load the config, set up logging, hand over to the service.

Runs in the main thread, before any other thread exists. It holds no logic of its own beyond
mapping problems to exit statuses (the contract in docs/protocol.md §4):
0 ok (`--check-config`, `--version`, clean shutdown); 2 usage error or invalid configuration,
including what `preflight.check()` finds outside the file (TLS files, an unresolvable host), so
`chatd` and `chatd --check-config` refuse a config with the same line; 1 the configuration is
valid but chatd cannot start (log file, address in use: StartupError; DNS failing for now).
Every failure is one line `chatd: error: …` on stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from chatd import __version__, log
from chatd import config as configmod
from chatd.admin import protocol as adminproto
from chatd.config import preflight
from chatd.config.settings import SETTINGS, Setting


def _ensure_std_streams() -> None:
    """Give Python a usable stdin/stdout/stderr when it was started with one closed (`0<&-`):
    sys.stdin is then None and click, python-daemon's DaemonContext and print() all fail on it."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))


def _fail(ctx: click.Context, message: str, status: int) -> NoReturn:
    click.echo(f"chatd: error: {message}", err=True)
    takeover = ctx.obj
    if takeover is not None:  # an upgrade: the old chatd reports why, and serves on
        takeover.fail(message)
    ctx.exit(status)


def _log_file_error(path: str, err: OSError) -> str:
    """One line for a log file chatd could not open, naming the directory when it was
    creating a missing one that failed."""
    reason = err.strerror or str(err)
    if err.filename and os.path.abspath(err.filename) != path:
        return f"cannot create log directory {err.filename} (for {path}): {reason}"
    return f"cannot open log file {path}: {reason}"


def _gen_cluster_secret(ctx: click.Context, path: str) -> NoReturn:
    """``--gen-cluster-secret PATH``: a new secret, never over an existing one (every node
    must share one: copy the file, do not make another). The secret itself is not printed."""
    from chatd.cluster.secret import write_secret

    try:
        write_secret(path)
    except FileExistsError:
        _fail(ctx, f"{path} exists: every node must use the same secret (remove it first to "
                   "make a new one)", 1)
    except OSError as err:
        _fail(ctx, f"cannot write {path}: {err.strerror or err}", 1)
    click.echo(f"chatd: wrote a new cluster secret to {path} (mode 0600); give every node a "
               "copy and name it in [cluster] cluster_secret_file")
    ctx.exit(0)


def _dry_start(ctx: click.Context, config) -> NoReturn:
    """What an upgrade runs first (reexec.py): everything a start checks short of binding
    (the config and the log file above; the bans file and the history file here) and every
    module a serving chatd imports; one line on stdout says so. Nothing is bound, written or
    started."""
    from chatd.store.bans import BanFileError, BanList

    try:
        from chatd.lifecycle.drystart import dry_start_report
        from chatd.lifecycle.service import state_dir
        from chatd.store.history import HistoryFileError
        from chatd.store.sqlite import SqliteStore

        BanList(state_dir(config)).load()
        if config.history_lines and not config.redis_url:
            SqliteStore(state_dir(config), config.history_lines).check()
        report = dry_start_report(config)
    except ImportError as err:
        _fail(ctx, f"cannot import {err.name or err}: {err}", 1)
    except (BanFileError, HistoryFileError) as err:
        _fail(ctx, str(err), 1)
    click.echo(report)
    ctx.exit(0)


def _setting_option(setting: Setting) -> Any:
    """The click option the settings table gives `setting` (its name is the Config field)."""
    option = setting.option
    shown = setting.default if option.default is True else option.default
    kind = click.Choice(option.choices, case_sensitive=option.case_sensitive) \
        if option.choices else option.type
    return click.option(option.flag, setting.name, type=kind, metavar=option.metavar,
                        help=f"{option.help}  [default: {shown}]" if shown else option.help)


def _setting_options(command: Any) -> Any:
    """Every setting that has a command-line option, in the table's order."""
    for setting in reversed(SETTINGS):
        if setting.option is not None:
            command = _setting_option(setting)(command)
    return command


class _Command(click.Command):
    """A click command that repairs missing std streams before click itself touches them."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _ensure_std_streams()
        return super().main(*args, **kwargs)


def _upgrade_takeover(ctx: click.Context):
    """The takeover an upgrade started this process for (its environment says), or None. The
    failure path (cli's _fail) tells the old process through ``ctx.obj``."""
    if os.environ.get("CHATD_UPGRADE_STATE"):  # exec'd in place by an upgrade (reexec.py)
        from chatd.lifecycle.reexec import ExecTakeover

        ctx.obj = ExecTakeover.from_environment()
    elif os.environ.get("CHATD_UPGRADE_FD"):  # started by a chatd from before issue 23 §4
        from chatd.lifecycle.upgrade import Takeover

        ctx.obj = Takeover.from_environment()
    return ctx.obj


def _load_config(ctx: click.Context, config_path, options: dict, check_config: bool):
    """The config, checked; a bad one ends chatd with one line (status 2; 1 if the trouble is
    transient and we were starting)."""
    try:
        config = configmod.load(config_path, options)
        preflight.check(config)
    except preflight.TransientError as err:  # DNS down for now: not the config's fault
        _fail(ctx, str(err), 2 if check_config else 1)
    except configmod.ConfigError as err:
        _fail(ctx, str(err), 2)
    return config


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", metavar="PATH",
              help="TOML configuration file (see etc/chatd.toml); options below win over it.")
@_setting_options
@click.option("--daemon", "daemonize", is_flag=True,
              help="Detach into the background; returns once chatd is listening (exit 0) "
                   "or has failed (exit 1).")
@click.option("--gen-cluster-secret", "secret_path", metavar="PATH",
              help="Write a new cluster secret to PATH (mode 0600; it must not exist) and exit.")
@click.option("--check-config", is_flag=True,
              help="Validate the configuration, print the effective settings and exit.")
@click.version_option(__version__, "--version", prog_name="chatd", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, check_config: bool, daemonize: bool,
         secret_path: str | None, **options: Any) -> None:
    """Run the chatd chat server in the foreground (connect with `nc HOST PORT`), or in the
    background with --daemon."""
    if secret_path is not None:
        _gen_cluster_secret(ctx, secret_path)
    dry_start = os.environ.pop("CHATD_UPGRADE_DRY_START", None) == "1"
    takeover = None if check_config else _upgrade_takeover(ctx)
    config = _load_config(ctx, config_path, options, check_config)
    if check_config:
        defaults = {"state_dir": configmod.default_state_dir(),
                    "admin_socket": adminproto.daemon_socket_path()}
        click.echo("\n".join(config.describe(defaults)))
        ctx.exit(0)
    try:
        log.configure(config.log_format, config.log_level, config.log_file)
    except OSError as err:
        _fail(ctx, _log_file_error(config.log_file, err), 1)
    if dry_start:  # an upgrade asks whether this chatd would start (reexec.py)
        _dry_start(ctx, config)
    # Imported here so that --version and --check-config work without the server's modules.
    from chatd.lifecycle.service import StartupError, run

    if daemonize and config.log_file is None and takeover is None:
        click.echo("chatd: warning: --daemon without --log-file: the daemon's logs are discarded",
                   err=True)
    try:
        status = run(config, daemonize=daemonize, takeover=takeover)
    except StartupError as err:  # e.g. address in use: one line, status 1
        _fail(ctx, str(err), 1)
    sys.exit(status)
