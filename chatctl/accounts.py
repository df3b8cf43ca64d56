"""chatctl's ``account`` commands (SPEC §12): add, passwd, disable, enable, delete, list, show.

A password never travels on the command line, where ``ps`` and the shell's history would show
it: ``add`` and ``passwd`` ask for it on the terminal (hidden, twice), or read one line from
stdin with ``--password-stdin`` (for scripts). Without a terminal and without that option they
refuse (exit 2) rather than read a password from wherever stdin happens to point. chatctl
never prints the password, and chatd never logs it.
"""

from __future__ import annotations

import sys

import click

from chatctl import format as fmt
from chatctl.state import State, group, pass_state

_PASSWORD_STDIN = click.option(
    "--password-stdin", is_flag=True,
    help="Read the password from the first line of stdin (its line end dropped) instead of "
         "asking on the terminal.")


def read_password(from_stdin: bool) -> str:
    """The new password: stdin's first line, or asked twice on the terminal (not echoed)."""
    if from_stdin:
        raw = sys.stdin.buffer.readline()
        try:
            password = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise click.UsageError("--password-stdin: the password is not UTF-8") from None
        if not password:
            raise click.UsageError("--password-stdin: no password on stdin")
        return password
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask for the password on: use --password-stdin")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@group(short_help="Manage accounts: add, passwd, disable, enable, delete, list, show.")
def account() -> None:
    """Manage the accounts of a chatd (registered nicks; on a closed server, who may chat).

    \b
      chatctl account add alice                  # asks for the password twice
      printf '%s\\n' "$PW" | chatctl account add alice --password-stdin
      chatctl account disable alice              # also closes alice's connection
      chatctl account list
    """


@account.command(short_help="Create an account.")
@click.argument("name")
@_PASSWORD_STDIN
@pass_state
def add(state: State, name: str, password_stdin: bool) -> None:
    """Create the account NAME. The password (8 to 256 bytes, no spaces) is asked for on the
    terminal, or read from stdin with --password-stdin; never give it as an argument."""
    password = read_password(password_stdin)
    state.run("account_add", fmt.account_added, name=name, password=password)


@account.command(short_help="Set an account's password.")
@click.argument("name")
@_PASSWORD_STDIN
@pass_state
def passwd(state: State, name: str, password_stdin: bool) -> None:
    """Set the password of account NAME, as `add` reads it. A connection already logged in
    stays."""
    password = read_password(password_stdin)
    state.run("account_passwd", fmt.account_passwd, name=name, password=password)


@account.command(short_help="Disable an account and close its connection.")
@click.argument("name")
@pass_state
def disable(state: State, name: str) -> None:
    """Disable account NAME: its connection is closed with "*** your account was disabled"
    and its logins are refused until `chatctl account enable`."""
    state.run("account_disable", fmt.account_disabled, name=name)


@account.command(short_help="Let a disabled account log in again.")
@click.argument("name")
@pass_state
def enable(state: State, name: str) -> None:
    """Let account NAME log in again."""
    state.run("account_enable", fmt.account_enabled, name=name)


@account.command(short_help="Delete an account and close its connection.")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first (asked only on a terminal).")
@pass_state
def delete(state: State, name: str, yes: bool) -> None:
    """Delete account NAME (there is no undo: on a terminal chatctl asks first). Its
    connection is closed with "*** your account was disabled", and its nick is free again."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete account {name}? There is no undo", abort=True)
    state.run("account_delete", fmt.account_deleted, name=name)


@account.command("list")
@pass_state
def list_(state: State) -> None:
    """List the accounts: NAME CREATED LAST-LOGIN (UTC) STATE (active or disabled) ONLINE
    (logged in now)."""
    state.run("accounts", fmt.accounts)


@account.command(short_help="Show one account.")
@click.argument("name")
@pass_state
def show(state: State, name: str) -> None:
    """Show account NAME: created, last login (UTC), state, online."""
    state.run("account", fmt.account, name=name)


COMMANDS = (account,)
