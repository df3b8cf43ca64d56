"""The settings table: every setting spelled once, with its section, default, check and CLI option.

Config's fields, SECTIONS (the file layout), the value checks, the TOML description and the
`chatd` options are all generated from SETTINGS, so a new setting is one row here (and its line
in etc/chatd.toml and README's settings table, which tests compare with this table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd.config import checks
from chatd.config.checks import Check

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "SECTIONS", "SETTING", "SETTINGS", "Option", "Setting"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
ACCOUNT_MODES = ("open", "closed")
PLAINTEXT_RULES = ("local", "allow", "deny")


@dataclass(frozen=True, slots=True)
class Option:
    """A setting's `chatd` command-line option. ``default`` is what the help says after
    "[default: …]": True for the setting's own default, a text, or False for nothing."""

    flag: str
    help: str
    default: str | bool = False
    metavar: str | None = None
    type: type | None = None
    choices: tuple[str, ...] | None = None
    case_sensitive: bool = True


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: a Config field, a key of the TOML file's `[section]`.

    ``unset`` is how the file spells None; ``spell`` turns a field value back into the file's
    form where the check changed it; a ``secret`` value is shown only through `shown()`."""

    name: str
    section: str
    type: str  # the Config field's annotation
    default: Any
    check: Check
    option: Option | None = None
    secret: bool = False
    unset: str = ""
    spell: Callable[[Any], Any] | None = None  # field value -> file value, if the check reshaped it

    def shown(self, value: Any) -> Any:
        """``value`` as it may be printed (errors, --check-config): never a secret's password."""
        if not self.secret or not isinstance(value, str) or not value:
            return value
        # Imported only when there is a secret to hide: the cluster package loads its whole bus.
        from chatd.cluster.secret import redact

        return redact(value)

    def to_file(self, value: Any) -> Any:
        """The TOML spelling of a field value: the inverse of the check."""
        if value is None:
            return self.unset
        return self.spell(value) if self.spell else value


def _path(name: str, section: str, empty_means: str, option: Option | None = None) -> Setting:
    """An optional path setting: "" in the file is None (``empty_means``)."""
    return Setting(name, section, "str | None", None, checks.path(empty_means), option)


SETTINGS: tuple[Setting, ...] = (
    # [server]
    Setting("host", "server", "str", "127.0.0.1", checks.host,
            Option("--host", "Address to listen on.", default=True)),
    Setting("port", "server", "int", 5555, checks.int_range(0, 65535),
            Option("--port", "TCP port; 0 picks a free port.", default=True, type=int)),
    Setting("server_name", "server", "str", "chatd", checks.server_name),
    Setting("motd", "server", "tuple[str, ...]", ("Type /help for the list of commands.",),
            checks.motd, spell="\n".join),
    # None = $STATE_DIRECTORY, $XDG_STATE_HOME/chatd, ~/.local/state/chatd (model.default_state_dir)
    _path("state_dir", "server", "the default",
          Option("--state-dir", "Where bans and room history persist.", metavar="PATH",
                 default="$STATE_DIRECTORY, else $XDG_STATE_HOME/chatd or ~/.local/state/chatd")),
    _path("pidfile", "server", "none",
          Option("--pidfile", "Write and lock a pidfile; a live one makes chatd refuse to start.",
                 metavar="PATH")),
    # [limits]
    Setting("max_clients", "limits", "int", 1024, checks.int_range(1)),
    Setting("max_clients_per_ip", "limits", "int", 32, checks.int_range(1)),
    Setting("sendq_bytes", "limits", "int", 262144, checks.int_range(1024)),
    Setting("recvq_bytes", "limits", "int", 65536, checks.int_range(1)),
    Setting("rate", "limits", "float", 5.0, checks.number(0, inclusive=False)),
    Setting("burst", "limits", "int", 10, checks.int_range(1)),
    Setting("idle_timeout", "limits", "float", 0.0, checks.number(0, inclusive=True)),
    Setting("max_line_bytes", "limits", "int", 1024, checks.int_range(64, 1048576)),
    # SO_SNDBUF of a chat connection (the kernel's share); 0 = autotune
    Setting("sndbuf_bytes", "limits", "int", 131072, checks.int_range(0, 16777216)),
    # a client that never sent LF: a pause ends its line
    Setting("partial_line_timeout", "limits", "float", 1.0, checks.number(0, inclusive=True)),
    # [logging]
    # None = auto: json unless the log output is a terminal
    Setting("log_format", "logging", "str | None", None, checks.choice(LOG_FORMATS, auto=True),
            Option("--log-format", "Log line format.", choices=LOG_FORMATS,
                   default="json unless stderr is a terminal"), unset="auto"),
    Setting("log_level", "logging", "str", "info", checks.choice(LOG_LEVELS),
            Option("--log-level", "Minimum level logged.", default=True, choices=LOG_LEVELS,
                   case_sensitive=False)),
    _path("log_file", "logging", "stderr",  # None = stderr
          Option("--log-file", "Append logs to this file instead of stderr.", metavar="PATH")),
    Setting("log_messages", "logging", "bool", False, checks.boolean),
    # [admin]
    # None = the docs/protocol.md §4 default, resolved at start
    _path("admin_socket", "admin", "the default",
          Option("--admin-socket", "Unix socket for chatctl.", metavar="PATH",
                 default="see docs/protocol.md §4; env CHATD_ADMIN_SOCKET")),
    # None = only root and chatd's own user may administer
    Setting("admin_group", "admin", "str | None", None, checks.group),
    # [tls]
    # the TLS listener, on when tls_cert and tls_key are set
    Setting("tls_port", "tls", "int", 5556, checks.int_range(0, 65535),
            Option("--tls-port", "Port of the TLS listener (needs tls_cert/tls_key).", type=int)),
    _path("tls_cert", "tls", "no TLS"),
    _path("tls_key", "tls", "no TLS"),
    # TLS connections not yet through their handshake, at once, and from one IP address
    Setting("max_handshakes", "tls", "int", 128, checks.int_range(1)),
    Setting("max_handshakes_per_ip", "tls", "int", 8, checks.int_range(1)),
    Setting("handshake_timeout", "tls", "float", 5.0, checks.number(0, inclusive=False)),
    # [irc] (docs/protocol.md §14): IRC clients on the same rooms; 0 = no such listener
    Setting("irc_port", "irc", "int", 0, checks.int_range(0, 65535),
            Option("--irc-port", "Port of the IRC listener (0: none).", type=int)),
    # IRC over TLS, with the [tls] certificate (needs tls_cert/tls_key)
    Setting("irc_tls_port", "irc", "int", 0, checks.int_range(0, 65535)),
    # accounts that may become IRC operators with OPER NAME PASSWORD (KILL, WALLOPS)
    Setting("irc_operators", "irc", "tuple[str, ...]", (), checks.names, spell=list),
    # [cluster] (docs/cluster.md)
    # None = single node; else the cluster's Redis. Its password is never shown.
    Setting("redis_url", "cluster", "str | None", None, checks.redis_url, secret=True),
    # None = HOSTNAME:PORT, resolved at start
    Setting("node_name", "cluster", "str | None", None, checks.node_name),
    # seconds a silent node is still believed alive
    Setting("node_timeout", "cluster", "float", 10.0, checks.number(0, inclusive=False)),
    # the key every node seals Redis values with
    _path("cluster_secret_file", "cluster", "none"),
    # a redis_url without credentials (not advised)
    Setting("allow_unauthenticated_redis", "cluster", "bool", False, checks.boolean),
    # [history] (README "Room history")
    # lines kept per room, and replayed on /join and on connect; 0 = none
    Setting("history_lines", "history", "int", 1000, checks.int_range(0, 100000)),
    Setting("history_on_join", "history", "int", 10, checks.int_range(0, 1000)),
    # tails of rooms nobody is in, kept in memory at most, and their size at most
    Setting("history_idle_rooms", "history", "int", 1000, checks.int_range(0)),
    Setting("history_idle_bytes", "history", "int", 16777216, checks.int_range(0)),
    # [accounts] (docs/protocol.md §12): who needs an account, and how passwords may travel
    # open: guests chat, anyone may register; closed: only operator-made accounts chat
    Setting("mode", "accounts", "str", "open", checks.choice(ACCOUNT_MODES)),
    # local: TLS or loopback peers only; allow: anywhere; deny: TLS only
    Setting("plaintext_passwords", "accounts", "str", "local", checks.choice(PLAINTEXT_RULES)),
    # closed mode: seconds a connection has to log in
    Setting("login_timeout", "accounts", "float", 60.0, checks.number(0, inclusive=False)),
    # [metrics]: the Prometheus endpoint (admin/metrics.py), on when metrics_port is set
    Setting("metrics_host", "metrics", "str", "127.0.0.1", checks.host),
    Setting("metrics_port", "metrics", "int", 0, checks.int_range(0, 65535)),  # 0 = none
    # scrapes closer together get the last collection
    Setting("metrics_interval", "metrics", "float", 1.0, checks.number(0, inclusive=True)),
)

#: Setting by name (the Config field name).
SETTING: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

#: File layout: section -> keys, in the order of etc/chatd.toml. Keys are Config field names.
SECTIONS: dict[str, tuple[str, ...]] = {
    section: tuple(setting.name for setting in SETTINGS if setting.section == section)
    for section in dict.fromkeys(setting.section for setting in SETTINGS)
}
