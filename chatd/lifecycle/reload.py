"""A reload (SIGHUP, ``chatctl reload``): the new config file read and validated whole, and the
keys it changes that only a restart applies (the listeners and the history store are set up
at start). The service applies what is left (service.py, ``handle_reload``).
"""

from __future__ import annotations

import structlog

from chatd import config as config_module
from chatd import log as logsetup

log = structlog.get_logger("chatd")

#: (key, changed(new, bound, tls_on)): what differs from the config the listeners were
#: bound with (so changing a key back clears it); tls_on: a TLS listener is running.
RESTART_ONLY = (
    ("server.host", lambda new, bound, tls_on: new.host != bound.host),
    ("server.port", lambda new, bound, tls_on: new.port != bound.port),
    ("tls.tls_port", lambda new, bound, tls_on: new.tls_port != bound.tls_port
     and bool(new.tls_cert or bound.tls_cert)),
    ("tls.tls_cert", lambda new, bound, tls_on: bool(new.tls_cert) != tls_on),  # on or off
    ("history.history_lines", lambda new, bound, tls_on: new.history_lines != bound.history_lines),
    ("metrics.metrics_host", lambda new, bound, tls_on: new.metrics_host != bound.metrics_host),
    ("metrics.metrics_port", lambda new, bound, tls_on: new.metrics_port != bound.metrics_port),
    ("irc.irc_port", lambda new, bound, tls_on: new.irc_port != bound.irc_port),
    ("irc.irc_tls_port", lambda new, bound, tls_on: new.irc_tls_port != bound.irc_tls_port),
)


def restart_required(new, bound, tls_on: bool) -> list[str]:
    """The keys of ``new`` that the running listeners and store do not follow."""
    return [key for key, changed in RESTART_ONLY if changed(new, bound, tls_on)]


def read_new(old):
    """The log file reopened and the config file read again: -> (new Config, "") or (None,
    why not). Logs ``config_reload_failed`` when the file is invalid."""
    try:  # first, and whatever the new file says: logrotate's postrotate relies on it
        logsetup.reopen()
    except OSError as exc:  # keep logging to the old file rather than fail the reload
        log.error("log_reopen_failed", error=exc.strerror or str(exc))
    try:
        return config_module.reload(old), ""
    except config_module.ConfigError as exc:
        log.error("config_reload_failed", error=str(exc))
        return None, str(exc)
