"""chatctl's argument types (a client, a duration) and shell completion from the daemon."""

from __future__ import annotations

import re

import click

from chatctl import format as fmt
from chatctl.client import AdminClient
from chatd.admin.protocol import client_socket_path


def ask_quietly(ctx: click.Context, cmd: str) -> list:
    """For shell completion: the daemon's answer, or nothing (completion must never fail)."""
    params = ctx.find_root().params
    try:
        with AdminClient(params.get("socket_path") or client_socket_path(), timeout=1.0) as a:
            return a.request(cmd) or []
    except Exception:  # noqa: BLE001 - no daemon, no suggestions
        return []


def complete_room(ctx, param, incomplete: str) -> list[str]:
    names = (r.get("name", "") for r in ask_quietly(ctx, "rooms"))
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
        nicks = (c.get("nick", "") for c in ask_quietly(ctx, "list"))
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
