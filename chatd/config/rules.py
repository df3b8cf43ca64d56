"""The rules between settings, checked once every value has passed its own check: each rule
names the one key to fix, so the error reads like any other bad value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatd.config.errors import ConfigError

__all__ = ["MOTD_MAX_BYTES", "MOTD_SENDQ_SHARE", "RULES"]

#: The MOTD as sent (lines plus "*** " and CRLF) is at most this many bytes: about 200 lines of
#: 80 columns, more than anyone reads at connect, and it is copied into every new client's
#: queue (1024 clients connecting at once: 16 MiB).
MOTD_MAX_BYTES = 16384
#: ...and at most this fraction of limits.sendq_bytes (a quarter: 64 KiB of the default 256 KiB).
MOTD_SENDQ_SHARE = 4


def _tls_pair(config: Any) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        raise ConfigError(f"tls.{missing}", "tls_cert and tls_key go together (set both or neither)")


def _recvq_holds_a_line(config: Any) -> None:
    if config.recvq_bytes < config.max_line_bytes:
        raise ConfigError(
            "limits.recvq_bytes",
            f"must be >= max_line_bytes ({config.max_line_bytes}) (got {config.recvq_bytes!r})",
        )


def _tls_port_apart(config: Any) -> None:
    if config.tls_cert is not None and config.port != 0 and config.tls_port == config.port:
        raise ConfigError("tls.tls_port", f"same as server.port ({config.port})")


def _replay_within_history(config: Any) -> None:
    if 0 < config.history_lines < config.history_on_join:
        raise ConfigError("history.history_on_join",
                          f"must be <= history_lines ({config.history_lines}) "
                          f"(got {config.history_on_join!r})")


def _cluster_has_a_secret(config: Any) -> None:
    if config.redis_url and config.cluster_secret_file is None:
        raise ConfigError("cluster.cluster_secret_file", "required in cluster mode: every node "
                          "needs the same secret (chatd --gen-cluster-secret PATH writes one)")


def _irc_ports_apart(config: Any) -> None:
    """Each IRC listener on a port of its own; IRC over TLS needs the [tls] certificate."""
    if config.irc_tls_port and config.tls_cert is None:
        raise ConfigError("irc.irc_tls_port", "needs tls.tls_cert and tls.tls_key")
    taken = {"server.port": config.port,
             "tls.tls_port": config.tls_port if config.tls_cert is not None else 0,
             "metrics.metrics_port": config.metrics_port}
    for key in ("irc_port", "irc_tls_port"):
        port = getattr(config, key)
        for other, used in taken.items():
            if port and used and port == used:
                raise ConfigError(f"irc.{key}", f"same as {other} ({used})")
        taken[f"irc.{key}"] = port


def _metrics_port_apart(config: Any) -> None:
    """The metrics endpoint cannot share a port with a chat listener (on the same address it
    could never bind; on another it would only confuse whoever reads the config)."""
    if config.metrics_port == 0:
        return
    if config.port != 0 and config.metrics_port == config.port:
        raise ConfigError("metrics.metrics_port", f"same as server.port ({config.port})")
    if config.tls_cert is not None and config.metrics_port == config.tls_port:
        raise ConfigError("metrics.metrics_port", f"same as tls.tls_port ({config.tls_port})")


def _motd_fits(config: Any) -> None:
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


#: In this order: the first rule a config breaks is the error reported.
RULES: tuple[Callable[[Any], None], ...] = (
    _tls_pair, _recvq_holds_a_line, _tls_port_apart, _replay_within_history,
    _cluster_has_a_secret, _metrics_port_apart, _irc_ports_apart, _motd_fits,
)
