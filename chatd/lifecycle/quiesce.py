"""The freeze every upgrade starts with (upgrade.py), and its undoing: what Service.quiesce
and Service.resume do, on the parts that can change what a client has or will get.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from chatd.core.closing import RESTARTING
from chatd.core.events import ServerRestarting
from chatd.lifecycle.frozen import UpgradeFailed

log = structlog.get_logger("chatd.upgrade")


@dataclass(frozen=True)
class Quiet:
    """The parts a freeze stops (built by the service)."""

    #: The plain listeners (the line protocol's, IRC's): their sessions are handed over.
    plain: list
    #: The TLS listeners (the line protocol's, IRC's): a TLS session cannot leave the
    #: process, so their clients are told to reconnect.
    tls: list
    admin: Any
    hub: Any
    flusher: Any
    gate: Any
    history_store: Any

    def listeners(self) -> list:
        return [*self.plain, *self.tls]

    def _live(self) -> int:
        return sum(listener.live_sessions for listener in self.plain)

    def quiesce(self, timeout: float) -> tuple[list, dict]:
        """Listeners and admin stop accepting (the sockets stay listening: the kernel queues
        newcomers for whoever serves next), TLS clients are told to reconnect (a TLS session
        cannot leave the process), sessions park between two reads (gate.py), the flusher
        stops between two writes, the history is written out. -> (parked sessions, unsent
        output by outbox). Raises UpgradeFailed with everything resumed."""
        try:
            for listener in self.listeners():
                listener.pause()
            self.admin.pause()
            if self.tls:
                notice = ServerRestarting()
                for client in self.hub.clients():
                    if client.outbox.tls is not None:
                        self.flusher.disconnect(client.outbox, RESTARTING, notice)
                if any(listener.wait_sessions(timeout) for listener in self.tls):
                    raise UpgradeFailed(f"TLS clients did not leave within {timeout:g} s")
            closed = time.monotonic()
            self.gate.close()
            parked = self.gate.wait_parked(self._live, timeout)
            if parked is None:
                raise UpgradeFailed(f"the sessions did not stop within {timeout:g} s")
            sessions_stopped = time.monotonic()
            backlogs = self.flusher.freeze(timeout)
            if backlogs is None:
                raise UpgradeFailed(f"output did not stop within {timeout:g} s")
            log.info("upgrade_frozen", sessions=len(parked),
                     unsent_bytes=sum(len(data) for data in backlogs.values()),
                     parking_ms=round((sessions_stopped - closed) * 1000, 1),
                     output_ms=round((time.monotonic() - sessions_stopped) * 1000, 1))
            if not self.history_store.flush(timeout):  # the new process reads it from the file
                log.warning("history_unsaved", timeout=timeout)
        except BaseException:
            self.resume()
            raise
        return parked, backlogs

    def resume(self) -> None:
        """Undo :meth:`quiesce` (the upgrade failed): everything goes on as before."""
        self.flusher.thaw()
        if self.gate.closed:
            self.gate.open()
        for listener in self.listeners():
            listener.resume()
        self.admin.resume()
        log.info("upgrade_resumed")
