"""What every way of upgrading shares (upgrade.py, reexec.py): the narrow view of the service
an upgrade gets (:class:`UpgradeContext`), the state of a frozen service, and the failure that
leaves this process serving on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd.lifecycle import fdstore
from chatd.lifecycle.state import (
    AdminRecord,
    ClientRecord,
    Descriptors,
    HandoverState,
    PidfileRecord,
    Sources,
)

#: How long each step may take by default: the new chatd's dry start, the freeze.
UPGRADE_SECONDS = 10.0


class UpgradeFailed(Exception):
    """Why the upgrade did not happen (one line); the running chatd serves on."""


@dataclass(frozen=True)
class UpgradeContext:
    """What an upgrade uses of the service, built by it as admin's AdminContext is.

    quiesce(timeout)  stop every source of change (Service.quiesce): -> (parked sessions,
                      unsent output by outbox); raises UpgradeFailed, everything resumed
    resume()          undo quiesce: the service goes on as if nothing had happened
    sources           the parts the state is taken from (state.Sources)
    """

    quiesce: Callable[[float], tuple[list, dict]]
    resume: Callable[[], None]
    sources: Sources
    fd_store: Any  # fdstore.FdStore
    start_directory: str  # where chatd was started: the new image runs from there
    under_systemd: bool  # systemd's notify socket, or its socket activation
    cluster: bool


def frozen_state(sources: Sources, parked: list, backlogs: dict) -> tuple[HandoverState,
                                                                        Descriptors]:
    """Everything the new process needs of a frozen service, and the descriptors it refers to
    (by index), each with its name in systemd's fd store."""
    fds = Descriptors()
    now = time.monotonic()
    clients = [ClientRecord.of(session.client, now,
                               fds.add(fdstore.client_name(session.client.id), session.client.sock),
                               backlogs.get(session.client.outbox, b""), session.handover_state())
               for session in parked]
    tls, admin, pidfile, metrics = (sources.tls_listener, sources.admin, sources.pidfile,
                                    sources.metrics)
    flusher = sources.flusher
    state = HandoverState(
        started_at=sources.started_at, next_client_id=next(sources.client_ids),
        listener=fds.add(fdstore.LISTEN, sources.listener.sock),
        tls_listener=fds.add(fdstore.LISTEN_TLS, tls.sock) if tls else None,
        admin=AdminRecord(fds.add("admin", admin.sock), admin.path, admin.inode),
        pidfile=PidfileRecord(fds.add("pidfile", pidfile.fd), pidfile.path) if pidfile else None,
        metrics=fds.add(fdstore.METRICS, metrics.socket) if metrics else None,
        irc_listener=fds.add(fdstore.LISTEN_IRC, sources.irc_listener.sock)
        if sources.irc_listener else None,
        irc_tls_listener=fds.add(fdstore.LISTEN_IRC_TLS, sources.irc_tls_listener.sock)
        if sources.irc_tls_listener else None,
        hub=sources.hub.handover_totals(),
        closed_out=[flusher.closed_lines_out, flusher.closed_bytes_out],
        clients=clients)
    return state, fds
