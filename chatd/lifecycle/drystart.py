"""The new chatd's side of a dry start (reexec.py step 1): it imports what serving needs,
and reports what the running chatd must check before it hands over.

A module of its own because it imports the whole service: reexec.py, which the service
imports, must not import it back.
"""

from __future__ import annotations

import json

import chatd.lifecycle.service  # noqa: F401  (everything a serving chatd needs: the proof)
from chatd import __version__
from chatd.lifecycle.state import READABLE_STATE_VERSIONS


def dry_start_report(config) -> str:
    """cli.py, in the dry start: import what this config makes a serving chatd import, and
    say so (what :func:`dry_start` reads), with what the running chatd must check for it:
    cluster mode, and the addresses of the TLS and metrics listeners (the running chatd
    binds those it does not have yet: :func:`_listen_anew`). Raises ImportError."""
    if config.metrics_port:
        import chatd.admin.metrics  # noqa: F401  (lazy in the service: prometheus_client)
    return json.dumps({
        "dry_start": "ok", "version": __version__,
        "state_versions": list(READABLE_STATE_VERSIONS), "cluster": bool(config.redis_url),
        "tls_listener": [config.host, config.tls_port] if config.tls_cert else None,
        "metrics": ([config.metrics_host, config.metrics_port] if config.metrics_port
                    else None),
        "irc_listener": [config.host, config.irc_port] if config.irc_port else None,
        "irc_tls_listener": [config.host, config.irc_tls_port] if config.irc_tls_port else None})
