"""Periodic duties of the main thread: idle timeouts, the state in systemd's fd store
(fdstore.py), where logged-in accounts stand (so that a crash loses no account's place),
the systemd STATUS line, watchdog pings.

The watchdog ping is earned, not sent on a timer: before each ``WATCHDOG=1`` the main thread
checks that the parts a wedged server would lose still work —

- the hub lock can be taken (no thread died or hangs holding it),
- the flusher processed the ping queued at the previous check (output is being dispatched),
- the accept thread accepted a probe connection (the listener still accepts).

If any check fails the ping is skipped and ``watchdog_failed`` is logged, so systemd's
WatchdogSec notices and restarts chatd. Runs in the main thread only, and sees the service
only through :class:`HousekeepingContext`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from chatd.core.closing import Close
from chatd.core.events import Error

log = structlog.get_logger("chatd.watchdog")

STATUS_SECONDS = 2.0
CHECK_TIMEOUT = 1.0
#: How often the places of logged-in accounts are written on a single node: what an account
#: may be sent again after a crash is what it was sent in the last such period.
PLACES_SECONDS = 2.0


@dataclass(frozen=True)
class HousekeepingContext:
    """What the periodic duties use of the service (built by it)."""

    hub: Any
    flusher: Any
    listener: Any  # the plain listener: its address, its probe
    config: Callable[[], Any]  # the Config in force now (a reload swaps it)
    save_state: Callable[[], None]  # the fd store's state, if clients changed (fdstore.py)
    #: Writes where the logged-in accounts stand (single node: Accounts.keep_places; None in
    #: cluster mode, where cluster/standing.py does it at each lease renewal).
    keep_places: Callable[[list], None] | None = None


class Housekeeper:
    def __init__(self, ctx: HousekeepingContext, notifier) -> None:
        self.ctx = ctx
        self.notifier = notifier
        self._next_ping = 0.0
        self._pings_queued = 0
        self._next_status = 0.0
        self._last_status = ""
        self._next_places = 0.0
        self._places: dict = {}  # account -> its positions as written last

    def tick(self) -> None:
        now = time.monotonic()
        self._reap_idle(now)
        self._reap_pending()
        self.ctx.save_state()  # no-op without systemd's store
        if self.ctx.keep_places is not None and now >= self._next_places:
            self._next_places = now + PLACES_SECONDS
            self._keep_places()
        if now >= self._next_status:
            self._next_status = now + STATUS_SECONDS
            self.update_status()
        interval = self.notifier.watchdog_interval
        if interval is not None and now >= self._next_ping:
            self._next_ping = now + interval
            problem = self.check()
            if problem is None:
                self.notifier.notify(WATCHDOG="1")
            else:
                log.error("watchdog_failed", problem=problem)

    def status_line(self) -> str:
        host, port = self.ctx.listener.address
        stats = self.ctx.hub.stats()
        return f"listening on {host}:{port}, {stats['clients']} clients, {stats['rooms']} rooms"

    def update_status(self, force: bool = False) -> None:
        if not self.notifier.enabled:
            return
        line = self.status_line()
        if force or line != self._last_status:
            self._last_status = line
            self.notifier.notify(STATUS=line)

    def check(self) -> str | None:
        """None when the server is healthy, else what is wrong."""
        ctx = self.ctx
        if not ctx.hub.responsive(CHECK_TIMEOUT):
            return "hub lock not available"
        if ctx.flusher.pongs < self._pings_queued:
            return "flusher did not run its previous ping"
        self._pings_queued += 1
        ctx.flusher.ping()
        if not ctx.listener.probe(CHECK_TIMEOUT):
            return "listener did not accept a probe connection"
        return None

    def _keep_places(self) -> None:
        """Write where each logged-in account stands, if that changed since the last time
        (one transaction; disk I/O, but under no lock: the hub's is taken for a copy only).
        A crash (``kill -9``) then loses no account's place: its next login is sent what
        came after (docs/protocol.md §12.3)."""
        now = {account: positions for account, positions in self.ctx.hub.account_places()}
        changed = [(account, positions) for account, positions in now.items()
                   if self._places.get(account) != positions]
        if changed:
            self.ctx.keep_places(changed)
        self._places = now

    def _reap_pending(self) -> None:
        """A closed server's connections that have not logged in within ``login_timeout``
        (docs/protocol.md §12), and IRC connections that have not registered within it
        (§14): told ``login required`` and closed. Pending = no nick yet."""
        config = self.ctx.config()
        closed = config.mode == "closed"
        limit = time.time() - config.login_timeout
        reason, notice = Close("login"), Error("login required")
        for client in self.ctx.hub.clients():
            if not client.nick and client.connected_at < limit and (
                    closed or client.outbox.protocol.names_itself):
                self.ctx.flusher.disconnect(client.outbox, reason, notice)

    def _reap_idle(self, now: float) -> None:
        idle_timeout = self.ctx.config().idle_timeout
        if idle_timeout <= 0:
            return
        limit = now - idle_timeout
        reason, notice = Close("idle"), Error("idle timeout")
        for client in self.ctx.hub.clients():
            if client.last_active < limit:
                self.ctx.flusher.disconnect(client.outbox, reason, notice)
