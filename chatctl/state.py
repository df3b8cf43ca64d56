"""What every chatctl command shares: ``ctx.obj`` (:class:`State`: the global options and the
connection), asking the daemon and printing its answer, and the per-command ``--json``.

A failure becomes the exit status here (chatctl/errors.py), so the commands only build a
request's arguments and pick a format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import click

from chatctl.client import AdminClient, AdminError, Unreachable
from chatctl.errors import CannotReach, Lost, Refused, out_of_reach_hint
from chatd.admin.protocol import client_socket_path


def to_json(result) -> str:
    """Indented JSON, except that a list has one compact object per line: as easy to read and
    grep, and fast for many clients (``indent=`` makes CPython skip its C encoder). A list
    inside an object (``history``'s ``lines``) is printed the same way, so every command that
    returns rows prints them alike."""
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


def _json_option() -> click.Option:
    return click.Option(["--json"], is_flag=True, expose_value=False, callback=_set_json,
                        help="Print the result as JSON.")


class Command(click.Command):
    """Every command also takes --json after its name (``chatctl list --json``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_json_option())


class Group(click.Group):
    """A group of commands (``chatctl account …``): it takes --json after its name too,
    and so do its commands (:class:`Command`)."""

    command_class = Command

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_json_option())


def one_line(text: str) -> str:
    """A message as one line of output, however the daemon or an exception spelled it."""
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
            return Refused(one_line(err.message), err.code, self.as_json)
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
            click.echo(to_json(result))
        else:
            for line in human(result):
                click.echo(line)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_state = click.make_pass_decorator(State)
#: How a command module declares a command: it takes ``--json`` after its name too.
command = partial(click.command, cls=Command)
#: And a group of commands.
group = partial(click.group, cls=Group)
