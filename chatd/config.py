"""chatd configuration: one immutable `Config` value, built from defaults, a TOML file and CLI options.

Why it looks like this: reload (SIGHUP, `chatctl reload`) must build and validate a *whole* new
config and swap it in, keeping the old one on failure, so loading is a pure function that either
returns a complete `Config` or raises `ConfigError` naming the bad key. Nothing in `load()` opens
sockets, touches logging or reads the environment; its only I/O is reading the TOML file.

Callers use `load()`, `reload()`, `Config.describe()` and `ConfigError`. The service thread owns
the current `Config` and replaces it; every other thread only reads the value it was handed.

The TOML file has eight sections, `[server]`, `[limits]`, `[logging]`, `[admin]`, `[tls]`,
`[cluster]`, `[history]` and `[metrics]` (see `etc/chatd.toml`);
unknown sections and keys are errors, because a typo that is silently ignored is a limit that
silently does not apply. Checks that need the filesystem or DNS (TLS files, `host`) live in
`preflight.py`; `reload()` runs those a reload applies.
"""

from __future__ import annotations

import grp
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config", "ConfigError", "load", "reload", "SECTIONS"]


class ConfigError(Exception):
    """A configuration problem. `key` is the dotted key (`limits.rate`) or the file path;
    `str(err)` is one line, `"<key>: <message>"`, fit to print after `chatd: error: `."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        # One line whatever the cause: the CLI prints it as-is.
        self.message = " ".join(message.split("\n"))
        super().__init__(key, self.message)

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True)
class Config:
    """The effective settings. Build it with `load()`; never mutate (use `dataclasses.replace`)."""

    host: str = "127.0.0.1"
    port: int = 5555
    server_name: str = "chatd"
    motd: tuple[str, ...] = ("Type /help for the list of commands.",)
    max_clients: int = 1024
    max_clients_per_ip: int = 32
    sendq_bytes: int = 262144
    sndbuf_bytes: int = 131072  # SO_SNDBUF of a chat connection (the kernel's share); 0 = autotune
    recvq_bytes: int = 65536
    rate: float = 5.0
    burst: int = 10
    idle_timeout: float = 0.0
    max_line_bytes: int = 1024
    partial_line_timeout: float = 1.0  # a client that never sent LF: a pause ends its line
    log_messages: bool = False
    log_format: str | None = None  # None = auto: json unless the log output is a terminal
    log_level: str = "info"
    log_file: str | None = None  # None = stderr
    admin_socket: str | None = None  # None = the docs/protocol.md §4 default, resolved at start
    admin_group: str | None = None  # None = only root and chatd's own user may administer
    state_dir: str | None = None  # None = $STATE_DIRECTORY, $XDG_STATE_HOME/chatd, ~/.local/state/chatd
    pidfile: str | None = None  # None = no pidfile
    tls_port: int = 5556  # the TLS listener, on when tls_cert and tls_key are set
    tls_cert: str | None = None
    tls_key: str | None = None
    max_handshakes: int = 128  # TLS connections not yet through their handshake, at once
    max_handshakes_per_ip: int = 8  # ... from one IP address
    handshake_timeout: float = 5.0  # seconds a TLS handshake may take
    redis_url: str | None = None  # None = single node; else the cluster's Redis (docs/cluster.md)
    node_name: str | None = None  # None = HOSTNAME:PORT, resolved at start
    node_timeout: float = 10.0  # seconds a silent node is still believed alive
    cluster_secret_file: str | None = None  # the key every node seals Redis values with
    allow_unauthenticated_redis: bool = False  # a redis_url without credentials (not advised)
    history_lines: int = 1000  # lines kept per room (docs: README "Room history"); 0 = none
    history_on_join: int = 10  # lines replayed on /join and on connect; 0 = none
    history_idle_rooms: int = 1000  # tails of rooms nobody is in, kept in memory at most
    history_idle_bytes: int = 16777216  # ... and their size at most (history.py)
    metrics_host: str = "127.0.0.1"  # the Prometheus endpoint (metrics.py), when metrics_port is set
    metrics_port: int = 0  # 0 = no metrics endpoint
    metrics_interval: float = 1.0  # scrapes closer together get the last collection
    config_path: str | None = None
    # The CLI options given at start, as (field, value) pairs, so that reload() can re-apply
    # them on top of the re-read file. Not part of the settings: excluded from ==, hash, repr.
    cli_overrides: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)

    def describe(self, defaults: dict[str, str] | None = None) -> list[str]:
        """The effective settings as `section.key = value` lines (valid TOML, dotted keys),
        in file order; `--check-config` prints them. ``defaults`` names what an unset key
        resolves to at run time (paths that depend on the environment), shown as a comment."""
        defaults = defaults or {}
        lines = []
        for section, keys in SECTIONS.items():
            for key in keys:
                value = getattr(self, key)
                line = f"{section}.{key} = {_toml_value(_file_value(key, value))}"
                if value is None and key in defaults:
                    line += f"  # default: {defaults[key]}"
                lines.append(line)
        return lines


def default_state_dir(env=None) -> str:
    """Where bans persist when ``state_dir`` is unset (docs/protocol.md §4): systemd's StateDirectory=,
    else $XDG_STATE_HOME/chatd, else ~/.local/state/chatd."""
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]  # systemd may pass several; ours is first
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "chatd")


# File layout: section -> keys, in the order of etc/chatd.toml. Keys are Config field names.
SECTIONS: dict[str, tuple[str, ...]] = {
    "server": ("host", "port", "server_name", "motd", "state_dir", "pidfile"),
    "limits": (
        "max_clients", "max_clients_per_ip", "sendq_bytes", "recvq_bytes",
        "rate", "burst", "idle_timeout", "max_line_bytes", "sndbuf_bytes",
        "partial_line_timeout",
    ),
    "logging": ("log_format", "log_level", "log_file", "log_messages"),
    "admin": ("admin_socket", "admin_group"),
    "tls": ("tls_port", "tls_cert", "tls_key",
            "max_handshakes", "max_handshakes_per_ip", "handshake_timeout"),
    "cluster": ("redis_url", "node_name", "node_timeout", "cluster_secret_file",
                "allow_unauthenticated_redis"),
    "history": ("history_lines", "history_on_join", "history_idle_rooms", "history_idle_bytes"),
    "metrics": ("metrics_host", "metrics_port", "metrics_interval"),
}
_SECTION_OF = {key: section for section, keys in SECTIONS.items() for key in keys}

#: The MOTD as sent (lines plus "*** " and CRLF) is at most this many bytes: about 200 lines of
#: 80 columns, more than anyone reads at connect, and it is copied into every new client's
#: queue (1024 clients connecting at once: 16 MiB).
MOTD_MAX_BYTES = 16384
#: ...and at most this fraction of limits.sendq_bytes (a quarter: 64 KiB of the default 256 KiB).
MOTD_SENDQ_SHARE = 4

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


class _Invalid(ValueError):
    """Raised by a check with the rule the value broke ("must be …")."""


def _integer(value: Any) -> int:
    # bool is a subclass of int, but `port = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("must be an integer")
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    rule = f"must be an integer >= {low}" if high is None else f"must be an integer between {low} and {high}"

    def check(value: Any) -> int:
        try:
            number = _integer(value)
        except _Invalid:
            raise _Invalid(rule) from None
        if number < low or (high is not None and number > high):
            raise _Invalid(rule)
        return number

    return check


def _number(low: float, inclusive: bool) -> Callable[[Any], float]:
    rule = f"must be a number {'>=' if inclusive else '>'} {low:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(rule)
        number = float(value)
        # TOML has inf and nan; neither is a usable rate or timeout.
        if not math.isfinite(number) or number < low or (number == low and not inclusive):
            raise _Invalid(rule)
        return number

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string")
    return value


def _server_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise _Invalid("must be a string of 1-64 printable characters")
    return value


def _motd(value: Any) -> tuple[str, ...]:
    # One string, not an array: a TOML multi-line string reads like the MOTD it produces.
    if not isinstance(value, str):
        raise _Invalid("must be a string (one MOTD line per line)")
    lines = tuple(value.splitlines())
    # The MOTD goes verbatim to every client's terminal: no escape sequences.
    if not all(line.replace("\t", " ").isprintable() for line in lines):
        raise _Invalid("must not contain control characters")
    return lines


def _choice(choices: tuple[str, ...], auto: bool = False) -> Callable[[Any], str | None]:
    accepted = (*choices, "auto") if auto else choices
    rule = "must be one of: " + ", ".join(accepted)

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or value.lower() not in accepted:
            raise _Invalid(rule)
        return None if value.lower() == "auto" else value.lower()

    return check


def _path(empty_means: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or "\0" in value:
            raise _Invalid(f'must be a path, or "" for {empty_means}')
        # Absolute, because --daemon changes the working directory to / before files are opened.
        return os.path.abspath(value) if value else None

    return check


def _group(value: Any) -> str | None:
    if not isinstance(value, str):
        raise _Invalid('must be a group name, or "" for none')
    if value:
        try:
            grp.getgrnam(value)
        except KeyError:
            raise _Invalid("no such group") from None
    return value or None


def _redis_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")) \
            and value != "":
        raise _Invalid('must be redis://HOST:PORT/DB, rediss://..., unix:///path, or "" for a '
                       'single node')
    return value or None


def _node_name(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64 or not value.isprintable() \
            or any(c in value for c in " |"):
        raise _Invalid('must be up to 64 printable characters without spaces or "|", or "" for '
                       "HOSTNAME:PORT")
    return value or None


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": _host,
    "port": _int_range(0, 65535),
    "server_name": _server_name,
    "motd": _motd,
    "max_clients": _int_range(1),
    "max_clients_per_ip": _int_range(1),
    "sendq_bytes": _int_range(1024),
    "sndbuf_bytes": _int_range(0, 16777216),
    "recvq_bytes": _int_range(1),
    "rate": _number(0, inclusive=False),
    "burst": _int_range(1),
    "idle_timeout": _number(0, inclusive=True),
    "max_line_bytes": _int_range(64, 1048576),
    "partial_line_timeout": _number(0, inclusive=True),
    "log_messages": _boolean,
    "log_format": _choice(LOG_FORMATS, auto=True),
    "log_level": _choice(LOG_LEVELS),
    "log_file": _path("stderr"),
    "admin_socket": _path("the default"),
    "admin_group": _group,
    "state_dir": _path("the default"),
    "pidfile": _path("none"),
    "tls_port": _int_range(0, 65535),
    "tls_cert": _path("no TLS"),
    "tls_key": _path("no TLS"),
    "max_handshakes": _int_range(1),
    "max_handshakes_per_ip": _int_range(1),
    "handshake_timeout": _number(0, inclusive=False),
    "redis_url": _redis_url,
    "node_name": _node_name,
    "node_timeout": _number(0, inclusive=False),
    "cluster_secret_file": _path("none"),
    "allow_unauthenticated_redis": _boolean,
    "history_lines": _int_range(0, 100000),
    "history_on_join": _int_range(0, 1000),
    "history_idle_rooms": _int_range(0),
    "history_idle_bytes": _int_range(0),
    "metrics_host": _host,
    "metrics_port": _int_range(0, 65535),
    "metrics_interval": _number(0, inclusive=True),
}


def _checked(key: str, value: Any) -> Any:
    """The field value for `key`, or ConfigError naming `section.key` and the offending value."""
    try:
        return _CHECKS[key](value)
    except _Invalid as err:
        if key == "redis_url" and isinstance(value, str):  # never the password
            from chatd.cluster.secret import redact

            value = redact(value)
        raise ConfigError(f"{_SECTION_OF[key]}.{key}", f"{err} (got {value!r})") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise ConfigError(path, f"cannot read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, f"invalid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"invalid TOML: not UTF-8 ({err.reason} at byte {err.start})") from None


def _file_settings(document: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten `{section: {key: value}}` into `{key: value}`, refusing anything unknown."""
    settings: dict[str, Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(section, "unknown section (expected one of: " + ", ".join(SECTIONS) + ")")
        if not isinstance(table, dict):
            raise ConfigError(section, f"must be a table [{section}] (got {table!r})")
        for key, value in table.items():
            if key not in SECTIONS[section]:
                raise ConfigError(
                    f"{section}.{key}",
                    f"unknown key (expected one of: {', '.join(SECTIONS[section])})",
                )
            settings[key] = value
    return settings


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (if any), then `overrides` (CLI options, keyed by
    Config field name; None values mean "not given" and are skipped). Every value is validated,
    whatever its source. Raises ConfigError."""
    given = tuple((key, value) for key, value in (overrides or {}).items() if value is not None)
    for key, _ in given:
        if key not in _CHECKS:
            raise ConfigError(key, "unknown setting")
    raw = _file_settings(_read_toml(path)) if path is not None else {}
    raw.update(given)
    values = {key: _checked(key, value) for key, value in raw.items()}
    config = Config(
        **values,
        config_path=os.path.abspath(path) if path is not None else None,
        cli_overrides=given,
    )
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        raise ConfigError(f"tls.{missing}", "tls_cert and tls_key go together (set both or neither)")
    if config.recvq_bytes < config.max_line_bytes:
        raise ConfigError(
            "limits.recvq_bytes",
            f"must be >= max_line_bytes ({config.max_line_bytes}) (got {config.recvq_bytes!r})",
        )
    if config.tls_cert is not None and config.port != 0 and config.tls_port == config.port:
        raise ConfigError("tls.tls_port", f"same as server.port ({config.port})")
    if 0 < config.history_lines < config.history_on_join:
        raise ConfigError("history.history_on_join",
                          f"must be <= history_lines ({config.history_lines}) "
                          f"(got {config.history_on_join!r})")
    if config.redis_url and config.cluster_secret_file is None:
        raise ConfigError("cluster.cluster_secret_file", "required in cluster mode: every node "
                          "needs the same secret (chatd --gen-cluster-secret PATH writes one)")
    _check_metrics_port(config)
    _check_motd_size(config)
    return config


def _check_metrics_port(config: Config) -> None:
    """The metrics endpoint cannot share a port with a chat listener (on the same address it
    could never bind; on another it would only confuse whoever reads the config)."""
    if config.metrics_port == 0:
        return
    if config.port != 0 and config.metrics_port == config.port:
        raise ConfigError("metrics.metrics_port", f"same as server.port ({config.port})")
    if config.tls_cert is not None and config.metrics_port == config.tls_port:
        raise ConfigError("metrics.metrics_port", f"same as tls.tls_port ({config.tls_port})")


def _check_motd_size(config: Config) -> None:
    """The MOTD must fit the queue it is sent through (docs/protocol.md §3 sendq_bytes).

    The greeting is queued whole the moment a client connects, before it has read a byte, so
    a MOTD near ``sendq_bytes`` disconnects every client with ``sendq exceeded``. Bounded, as
    sent (each line plus ``*** `` and CRLF), by MOTD_MAX_BYTES and by a MOTD_SENDQ_SHARE of
    ``sendq_bytes``: the rest of the queue is left for what arrives while the client reads it
    (join notices, room traffic). Each line is also at most ``max_line_bytes``: chatd sends no
    line longer than it would accept from a client.
    """
    sizes = [len(f"*** {line}".encode()) for line in config.motd]
    total = sum(size + 2 for size in sizes)
    cap = min(MOTD_MAX_BYTES, config.sendq_bytes // MOTD_SENDQ_SHARE)
    if total > cap:
        why = "" if cap == MOTD_MAX_BYTES else \
            f" (limits.sendq_bytes {config.sendq_bytes} / {MOTD_SENDQ_SHARE})"
        raise ConfigError("server.motd", f"too long: {total} bytes as sent, at most {cap}{why}")
    for number, size in enumerate(sizes, 1):
        if size > config.max_line_bytes:
            raise ConfigError("server.motd", f"line {number} too long: {size} bytes as sent, at most "
                                             f"limits.max_line_bytes ({config.max_line_bytes})")


def reload(config: Config) -> Config:
    """A new Config from `config`'s file, re-read now, with the same CLI overrides on top,
    preflight-checked for what a reload applies (the TLS files; preflight.py): the one step
    here that looks beyond the TOML file. Raises ConfigError; the caller keeps `config`."""
    new = load(config.config_path, dict(config.cli_overrides))
    from chatd import preflight  # here, not at the top: preflight imports this module

    preflight.check_reload(new)
    return new


def _file_value(key: str, value: Any) -> Any:
    """The TOML spelling of a field value: the inverse of the checks above."""
    if key == "motd":
        return "\n".join(value)
    if key == "redis_url" and value:
        from chatd.cluster.secret import redact  # the password is never shown

        return redact(value)
    if value is None:
        return "auto" if key == "log_format" else ""  # every other optional setting is a str
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")

