"""chatctl's failures: what it prints on stderr, and with which exit status (docs/protocol.md §7).

Each is a click exception that click shows and exits with; ``show()`` prints one line for
people, or with ``--json`` one JSON object, ``{"error": {"code": ..., "message": ...}}``. No
I/O beyond that, and nothing here talks to the daemon.
"""

from __future__ import annotations

import json

import click

from chatctl.client import Unreachable
from chatd.admin.protocol import SYSTEMD_SOCKET, out_of_reach

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3

#: What the user should do, by Unreachable.kind (docs/protocol.md §7 names the case and the path).
UNREACHABLE_HINTS = {
    "no_socket": "no socket (is chatd running?)",
    "refused": "connection refused (stale socket: is chatd running?)",
    "permission": "permission denied (run as root or as the chatd user, or join the admin group)",
    "busy": "busy: too many admin connections (try again later)",
}
#: The ``--json`` error code for each Unreachable.kind.
UNREACHABLE_CODES = {"no_socket": "no_socket", "refused": "connection_refused",
                     "permission": "permission_denied", "busy": "busy", "error": "unreachable",
                     "lost": "connection_lost"}


class _Failure(click.ClickException):
    """A failure shown as one line, or with ``--json`` as one JSON object, on stderr."""

    prefix = "chatctl: "

    def __init__(self, message: str, code: str, as_json: bool = False, **extra) -> None:
        super().__init__(message)
        self.code = code
        self.as_json = as_json
        self.extra = extra

    def show(self, file=None) -> None:
        if self.as_json:
            error = {"code": self.code, "message": self.message, **self.extra}
            click.echo(json.dumps({"error": error}, ensure_ascii=False), err=True)
        else:
            click.echo(f"{self.prefix}{self.message}", err=True)


class Refused(_Failure):
    """The daemon answered with an error: exit 1, its message on one line."""

    exit_code = EXIT_REFUSED
    prefix = "chatctl: error: "


class CannotReach(_Failure):
    """The daemon could not be asked: exit 3, naming the socket and the reason."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, err: Unreachable, as_json: bool = False, why: str | None = None) -> None:
        why = why or UNREACHABLE_HINTS.get(err.kind, err.detail)
        super().__init__(f"cannot reach chatd at {err.path}: {why}", UNREACHABLE_CODES[err.kind],
                         as_json, socket=err.path)


class Lost(_Failure):
    """``chatctl watch``: the stream ended without a final event (chatd died): exit 3."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, err: Unreachable, as_json: bool = False) -> None:
        super().__init__(f"lost chatd at {err.path}: {err.detail}", UNREACHABLE_CODES[err.kind],
                         as_json, socket=err.path)


def out_of_reach_hint(path: str) -> str | None:
    """Why a non-root chatctl found no socket of its own, when a systemd chatd's socket is
    there but closed to this user: the usual "is chatd running?" would send them astray."""
    if path == SYSTEMD_SOCKET or not out_of_reach(SYSTEMD_SOCKET):
        return None
    return (f"no socket; {SYSTEMD_SOCKET} exists but is not accessible to this user (use "
            f"--socket {SYSTEMD_SOCKET} as root, or join chatd's admin group)")


class InternalError(_Failure):
    """A bug in chatctl (or a reply it cannot format): exit 1, one line, no traceback."""

    exit_code = 1
    prefix = "chatctl: internal error: "
