"""What every part of the cluster bus shares: the connection, this node's name, the seal and
the validator (codec.py), and the link's state. One small object instead of the bus itself,
so the publisher, reader, leases and routing see only this."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import structlog

from chatd.cluster.checks import Validator
from chatd.cluster.codec import SHARED, RejectLog, Seal, Sequence
from chatd.cluster.secret import redact

log = structlog.get_logger("chatd.cluster")


class ClusterStartError(Exception):
    """Redis cannot be reached, or refuses us, at start: one line naming the URL (exit 1)."""


class Link:
    def __init__(self, url: str, node: str, seal: Seal, validator: Validator) -> None:
        self.url = url
        self.shown_url = redact(url)  # what logs and errors may say of it
        self.node = node  # resolved by the service before connect()
        self.seal = seal
        self.validator = validator
        self.sequence = Sequence()
        self.rejected = RejectLog()
        self.started_at = time.time()
        self.redis = None  # set by connect(); redis-py's client is thread-safe (a pool)
        self.scripts: dict = {}  # name -> registered Lua script (keys.py), set by connect()
        self.up = True  # written by report() under _lock; read by status and metrics
        self._lock = threading.Lock()

    def owner(self, client_id: int) -> str:
        return f"{self.node}|{client_id}"

    def entry(self, body: str, lost: str = "", stream: bytes = SHARED) -> dict:
        """A sealed stream entry from this node (for the shared stream unless ``stream``)."""
        return self.seal.entry(self.node, self.sequence.next(), body, lost, stream)

    def report(self, ok: bool, error: Exception | None = None) -> None:
        """Log the link's changes of state (every thread reports; only changes are logged)."""
        with self._lock:
            changed, self.up = self.up != ok, ok
        if changed and ok:
            log.info("cluster_link_restored", node=self.node, url=self.shown_url)
        elif changed:
            log.warning("cluster_link_lost", node=self.node, url=self.shown_url,
                        error=scrub(str(error), self.url))


def scrub(text: str, url: str) -> str:
    """An error text with the URL's password removed, should a library have quoted it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text
