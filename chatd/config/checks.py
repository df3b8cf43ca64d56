"""The value checks: each turns what the TOML file (or a CLI option) said into a field value,
or raises Invalid with the rule it broke. Pure but for `group` (it asks the group database)."""

from __future__ import annotations

import grp
import math
import os
from collections.abc import Callable
from typing import Any

from chatd.config.errors import Invalid

__all__ = ["boolean", "choice", "group", "host", "int_range", "motd", "node_name", "number",
           "path", "redis_url", "server_name"]

Check = Callable[[Any], Any]


def _integer(value: Any) -> int:
    # bool is a subclass of int, but `port = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("must be an integer")
    return value


def int_range(low: int, high: int | None = None) -> Check:
    rule = f"must be an integer >= {low}" if high is None else f"must be an integer between {low} and {high}"

    def check(value: Any) -> int:
        try:
            number = _integer(value)
        except Invalid:
            raise Invalid(rule) from None
        if number < low or (high is not None and number > high):
            raise Invalid(rule)
        return number

    return check


def number(low: float, inclusive: bool) -> Check:
    rule = f"must be a number {'>=' if inclusive else '>'} {low:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(rule)
        result = float(value)
        # TOML has inf and nan; neither is a usable rate or timeout.
        if not math.isfinite(result) or result < low or (result == low and not inclusive):
            raise Invalid(rule)
        return result

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


def server_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise Invalid("must be a string of 1-64 printable characters")
    return value


def motd(value: Any) -> tuple[str, ...]:
    # One string, not an array: a TOML multi-line string reads like the MOTD it produces.
    if not isinstance(value, str):
        raise Invalid("must be a string (one MOTD line per line)")
    lines = tuple(value.splitlines())
    # The MOTD goes verbatim to every client's terminal: no escape sequences.
    if not all(line.replace("\t", " ").isprintable() for line in lines):
        raise Invalid("must not contain control characters")
    return lines


def names(value: Any) -> tuple[str, ...]:
    """A list of account names (nicks: the line protocol's rule), as a tuple."""
    from chatd.text import is_valid_name

    if not isinstance(value, list) or not all(isinstance(v, str) and is_valid_name(v)
                                              for v in value) or len(value) > 64:
        raise Invalid("must be a list of at most 64 account names")
    return tuple(value)


def choice(choices: tuple[str, ...], auto: bool = False) -> Check:
    """One of ``choices``, any case; with ``auto``, also "auto", which is None (decided at start)."""
    accepted = (*choices, "auto") if auto else choices
    rule = "must be one of: " + ", ".join(accepted)

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or value.lower() not in accepted:
            raise Invalid(rule)
        return None if value.lower() == "auto" else value.lower()

    return check


def path(empty_means: str) -> Check:
    """A path, made absolute; "" is None (``empty_means``)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or "\0" in value:
            raise Invalid(f'must be a path, or "" for {empty_means}')
        # Absolute, because --daemon changes the working directory to / before files are opened.
        return os.path.abspath(value) if value else None

    return check


def group(value: Any) -> str | None:
    if not isinstance(value, str):
        raise Invalid('must be a group name, or "" for none')
    if value:
        try:
            grp.getgrnam(value)
        except KeyError:
            raise Invalid("no such group") from None
    return value or None


def redis_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")) \
            and value != "":
        raise Invalid('must be redis://HOST:PORT/DB, rediss://..., unix:///path, or "" for a '
                      'single node')
    return value or None


def node_name(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64 or not value.isprintable() \
            or any(c in value for c in " |"):
        raise Invalid('must be up to 64 printable characters without spaces or "|", or "" for '
                      "HOSTNAME:PORT")
    return value or None
