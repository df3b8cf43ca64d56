"""Rebuilding from a predecessor: what a new process takes over, whether from an upgrade's
handover (upgrade.Takeover, reexec.ExecTakeover) or from systemd's fd store
(fdstore.StoreTakeover). :class:`Inherited` hands the service its sockets and its clients, so
the service need not know which way they came.
"""

from __future__ import annotations

import select
import socket
import time

import structlog

from chatd.core.client import Client
from chatd.lifecycle import state as schema
from chatd.lifecycle.daemon import PidFile
from chatd.lifecycle.fdstore import StoreTakeover
from chatd.lifecycle.handover import HandoverError
from chatd.lifecycle.reexec import ExecTakeover
from chatd.lifecycle.startup import StartupError

log = structlog.get_logger("chatd.takeover")

#: After an upgrade, threads start RESUME_BATCH at a time, RESUME_PAUSE apart (start_clients).
RESUME_BATCH = 100
RESUME_PAUSE = 0.001


class Inherited:
    """The predecessor's state, received; its sockets and clients on demand."""

    def __init__(self, source) -> None:
        """``source``: a takeover (see the module docstring); raises StartupError."""
        self.source = source
        try:
            self.state = schema.read(source.receive())
        except HandoverError as exc:
            raise StartupError(f"cannot take over: {exc}") from None
        #: Kept connections the store's state does not know: (id, socket), admitted anew.
        self.orphans: list = source.orphans() if isinstance(source, StoreTakeover) else []

    @property
    def started_at(self) -> float:
        return self.state.started_at

    def next_client_id(self) -> int:
        """Above every id handed over, and every orphan's (its name in the store)."""
        return max([self.state.next_client_id] + [cid + 1 for cid, _ in self.orphans])

    def listener(self) -> tuple[socket.socket, bool]:
        """(socket, passed): passed if it is socket activation's (the fd store's restart)."""
        return self.source.sock(self.state.listener), getattr(self.source, "passed", False)

    def admin(self) -> tuple[socket.socket, str, int] | None:
        """(socket, path, inode), or None: the fd store keeps none (its directory is gone)."""
        admin = self.state.admin
        return None if admin is None else (self.source.sock(admin.fd), admin.path, admin.inode)

    def socket(self, key: str, wanted: bool) -> socket.socket | None:
        """The optional listener ``key`` (tls_listener, metrics) if handed over and still
        ``wanted`` by the config; one the config turned off is closed."""
        index = getattr(self.state, key)
        if index is None:
            return None
        sock = self.source.sock(index)
        if wanted:
            return sock
        sock.close()
        return None

    def clients(self, hub, flusher, protocols: dict) -> list:
        """The clients handed over, back in the hub and with their unsent output queued; no
        thread runs yet. Returns (client, session state) pairs for the listener.
        ``protocols``: name -> what makes a connection's protocol object (parts.protocols)."""
        state = self.state
        hub.resume_totals(state.hub)
        flusher.closed_lines_out, flusher.closed_bytes_out = state.closed_out
        now = time.monotonic()
        restored = []
        for record in state.clients:
            if self.source.fds[record.fd] < 0:
                continue  # a connection the fd store did not keep
            make = protocols.get(record.protocol)
            if make is None:  # from a chatd that spoke more: this one cannot serve it
                log.warning("client_protocol_unknown", client_id=record.id,
                            protocol=record.protocol[:32])
                self.source.sock(record.fd).close()
                continue
            client = Client(record.id, self.source.sock(record.fd), (record.ip, 0), make())
            client.peer = record.peer
            client.connected_at = record.connected_at
            client.last_active = now - record.idle
            client.bytes_in, client.lines_in = record.bytes_in, record.lines_in
            client.room_messages = record.room_messages
            client.private_messages = record.private_messages
            client.muted = record.muted
            client.outbox.bytes_out = record.bytes_out
            client.outbox.lines_out = record.lines_out
            if record.backlog:  # before any room line: it was due first
                flusher.submit(client.outbox, record.backlog, 0)
            hub.restore(client, record.nick, record.rooms, record.account)
            client.away = record.away
            if record.ignores:
                hub.set_ignores(client, tuple(record.ignores))
            restored.append((client, record.session))
        hub.resume_rooms(state.hub.get("rooms"))  # their topics, modes and operators
        return restored

    def commit(self) -> PidFile | None:
        """Tell the predecessor we are ready; returns once it has let go of the clients (its
        commit), with its pidfile if it had one. Raises StartupError if it gave up."""
        try:
            self.source.ready()
        except HandoverError as exc:
            raise StartupError(f"cannot take over: {exc}") from None
        pidfile = self.state.pidfile
        if pidfile is None:
            return None
        # the old process's lock (flock) comes with the descriptor
        adopted = PidFile.adopt(pidfile.path, self.source.fds[pidfile.fd])
        adopted.__enter__()
        return adopted

    def serving(self, admin) -> None:
        self.source.serving(admin)

    def inherited_states(self) -> list[str]:
        """State memfds the fd store holds from before: removed once ours is written."""
        return self.source.inherited_states if isinstance(self.source, StoreTakeover) else []

    def resumed(self, clients: int) -> dict:
        """The ``resumed`` event's fields: how many, from whom, and how this process took over."""
        fields = {"clients": clients, "old_pid": self.state.pid,
                  "old_version": self.state.chatd_version}
        if isinstance(self.source, StoreTakeover):
            fields.update(via="fdstore", final=self.state.final,
                          new_connections=len(self.orphans))
        elif isinstance(self.source, ExecTakeover):
            fields["via"] = "exec"
        return fields


def busy_first(restored: list) -> list:
    """The clients taken over, those with input waiting first (in the kernel, or read but not
    handled yet): their threads start first. An idle client loses nothing by waiting (what it
    sends stays in the kernel), while a busy room's line would wait behind all of them."""
    poller = select.poll()
    for client, _ in restored:
        poller.register(client.sock, select.POLLIN)
    pending = {fd for fd, _ in poller.poll(0)}
    return sorted(restored, key=lambda pair: not (pair[0].sock.fileno() in pending
                                                   or pair[1]["unread"] or pair[1]["held"]))


def start_clients(listener, restored: list) -> None:
    """Start the threads of the clients taken over, busy ones first, in batches: started
    back to back, thousands of new threads keep the busy sessions and the flusher from the
    GIL while they catch up with what arrived during the handover."""
    for count, (client, session_state) in enumerate(busy_first(restored), 1):
        listener.resume_client(client, session_state)
        if count % RESUME_BATCH == 0:
            time.sleep(RESUME_PAUSE)  # the threads started so far run
