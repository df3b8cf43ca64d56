"""systemd's file-descriptor store: under systemd, chatd's clients outlive its process
(SPEC §9, issue 11; docs/protocol.md §9).

systemd keeps what a service hands it with ``FDSTORE=1`` (``FDNAME=`` naming it) and passes it
to the unit's next main process, after socket activation's sockets, named in
``LISTEN_FDNAMES``. Measured with systemd 252 (tests/test_systemd_e2e.py): the store outlives
the process across a restart job (``systemctl restart``) and an automatic restart after a crash
(``Restart=on-failure``), and is closed once the unit stops with no job pending (``systemctl
stop``: clients get the shutdown notice first, as always).

What chatd keeps there while it runs (:class:`FdStore`):

- its own listening sockets (``listen``, ``listen-tls``, ``metrics``, ``listen-irc``,
  ``listen-irc-tls``), so that the next process listens on the very same sockets and nobody
  is refused meanwhile; socket activation's stay with chatd.socket;
- every plain client's connection, from its admission until its session ends (``client-ID``);
  TLS sessions cannot leave the process and are not kept;
- the state (upgrade.py's format, versioned) in a memfd, ``state-PID-N``: nick, room, mute and
  counters of every registered client. The housekeeper rewrites it within a tick of a change:
  a new memfd first, then the older one removed, so a crash at any moment leaves a whole one.

A restart (``chatctl systemd-stop``, from ExecStop=, when the stop is part of a restart job)
freezes like an upgrade and writes a final state with everything in flight (input read and not
handled, output not sent) before exiting. After a crash the last state written is what there
is: lines chatd held in memory at that moment are lost, and so are changes newer than that
state (SPEC §9).

The next process (:class:`StoreTakeover`, in place of upgrade.Takeover) takes the newest state,
matches its descriptors by name, resumes those clients, and serves kept connections the state
does not know (admitted after its last write) as new ones.

Threads: keep and forget are called from accept and session threads (one datagram each, sent
on the notifier's locked socket); everything else runs on the main thread.
"""

from __future__ import annotations

import json
import os
import socket
import time

import structlog

from chatd.lifecycle import state as schema
from chatd.lifecycle.handover import HandoverError, InheritedState
from chatd.lifecycle.state import ClientRecord, HandoverState, Sources

log = structlog.get_logger("chatd.fdstore")

#: Names chatd gives what it stores; anything else systemd passes is socket activation's.
LISTEN, LISTEN_TLS, METRICS = "listen", "listen-tls", "metrics"
LISTEN_IRC, LISTEN_IRC_TLS = "listen-irc", "listen-irc-tls"
CLIENT_PREFIX, STATE_PREFIX = "client-", "state-"
#: Our listening sockets' names: any other name systemd passes is socket activation's.
_LISTENING = frozenset((LISTEN, LISTEN_TLS, METRICS, LISTEN_IRC, LISTEN_IRC_TLS))
#: What a session starts from when the state says nothing about it (after a crash).
FRESH_SESSION = {"held": None, "unread": b"", "discarding": False, "telnet": None,
                 "tokens": 1e9}  # the rate limiter's bucket full (it clamps to its burst)


def client_name(client_id: int) -> str:
    return f"{CLIENT_PREFIX}{client_id}"


def is_ours(name: str) -> bool:
    return name in _LISTENING or name.startswith((CLIENT_PREFIX, STATE_PREFIX))


def store_size(env=None) -> int:
    """``$FDSTORE``: systemd 254 and later set it to FileDescriptorStoreMax=; the shipped unit
    sets it for older ones (252 here). 0: no store, chatd keeps nothing there."""
    value = (os.environ if env is None else env).get("FDSTORE", "")
    return int(value) if value.isascii() and value.isdigit() else 0


class FdStore:
    """What this process keeps in systemd's store; a no-op without one (see store_size)."""

    def __init__(self, notifier, enabled: bool, unit: str | None = None) -> None:
        self._notifier = notifier
        self.enabled = enabled and notifier.enabled
        self.unit = unit if self.enabled else None  # ours, for chatctl upgrade to restart
        self._states: list[str] = []  # state memfds in the store, ours and inherited (main)
        self._serial = 0
        self._fingerprint = None  # of the clients in the last state written (main thread)

    def keep(self, name: str, fd: int) -> None:
        if self.enabled and not self._notifier.notify_fds([fd], FDSTORE="1", FDNAME=name):
            log.warning("fdstore_refused", name=name)

    def forget(self, name: str) -> None:
        if self.enabled:
            self._notifier.notify_fds([], FDSTOREREMOVE="1", FDNAME=name)

    def keep_client(self, client) -> None:
        if self.enabled:
            self.keep(client_name(client.id), client.sock.fileno())

    def forget_client(self, client) -> None:
        self.forget_id(client.id)

    def forget_id(self, client_id: int) -> None:
        if self.enabled:
            self.forget(client_name(client_id))

    def start(self, sources: Sources, inherited: list[str]) -> None:
        """Our listening sockets into the store (socket activation's stay with chatd.socket),
        and a first state, which replaces the ones a previous process left (``inherited``)."""
        if not self.enabled:
            return
        self._states.extend(inherited)
        listener = sources.listener
        kept = ((LISTEN, None if listener.passed else listener.sock),
                (LISTEN_TLS, sources.tls_listener and sources.tls_listener.sock),
                (LISTEN_IRC, sources.irc_listener and sources.irc_listener.sock),
                (LISTEN_IRC_TLS, sources.irc_tls_listener and sources.irc_tls_listener.sock),
                (METRICS, sources.metrics))
        for name, what in kept:
            if what is not None:
                self.keep(name, what.fileno())
        self.save_if_changed(sources)

    def save_if_changed(self, sources: Sources) -> None:
        """The housekeeper's tick: write the state if a client came, went, or changed nick,
        rooms, account, mute, away or ignores since the last one (counters alone do not make a write)."""
        if not self.enabled:
            return
        clients = sources.hub.clients()
        fingerprint = hash(tuple((c.id, c.nick, c.account, c.muted, c.away, c.ignores,
                                  *(room.name for room in c.rooms)) for c in clients))
        if fingerprint != self._fingerprint:
            state = running_state(sources, clients)
            if self.save(state):
                self._fingerprint = fingerprint
                log.debug("fdstore_saved", clients=len(state.clients),
                          rooms=sorted({record.room for record in state.clients}))

    def save(self, state: HandoverState) -> bool:
        """Put ``state`` in the store as a new memfd, then remove the older ones."""
        if not self.enabled:
            return False
        state.saved_at = time.time()
        data = json.dumps(schema.write(state), separators=(",", ":")).encode()
        self._serial += 1
        name = f"{STATE_PREFIX}{os.getpid()}-{self._serial}"
        fd = os.memfd_create("chatd-state", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            # FDPOLL=0: a memfd never hangs up, there is nothing for systemd to watch
            stored = self._notifier.notify_fds([fd], FDSTORE="1", FDNAME=name, FDPOLL="0")
        finally:
            os.close(fd)
        if not stored:
            log.warning("fdstore_refused", name=name)
            return False
        old, self._states = self._states, [name]
        for stale in old:
            self.forget(stale)
        return True


def running_state(sources: Sources, clients: list) -> HandoverState:
    """What a crash would leave for the next process: the upgrade's state for every registered
    plain client, with nothing in flight (the kernel keeps what clients send meanwhile)."""
    names = schema.Descriptors()
    now = time.monotonic()
    records = [ClientRecord.of(client, now, names.add(client_name(client.id)), b"", FRESH_SESSION)
               for client in clients
               if client.nick and (client.room is not None or client.outbox.protocol.roomless)
               and client.outbox.tls is None]
    flusher = sources.flusher
    return HandoverState(
        started_at=sources.started_at,
        next_client_id=max((client.id for client in clients), default=0) + 1,
        listener=names.add(LISTEN),
        tls_listener=names.add(LISTEN_TLS) if sources.tls_listener else None,
        metrics=names.add(METRICS) if sources.metrics is not None else None,
        irc_listener=names.add(LISTEN_IRC) if sources.irc_listener else None,
        irc_tls_listener=names.add(LISTEN_IRC_TLS) if sources.irc_tls_listener else None,
        hub=sources.hub.handover_totals(),
        closed_out=[flusher.closed_lines_out, flusher.closed_bytes_out],
        clients=records, fdnames=names.names, final=False)


class StoreTakeover(InheritedState):
    """upgrade.Takeover's interface over what systemd passed back from the store."""

    def __init__(self, stored: dict[str, int], activation: list[int]) -> None:
        super().__init__()
        self._stored = stored
        self._activation = activation
        self.passed = False  # the listener is socket activation's (chatd.socket)
        self.inherited_states: list[str] = []

    def receive(self) -> dict:
        """The newest whole state, its descriptors resolved by name; raises HandoverError."""
        states = sorted(name for name in self._stored if name.startswith(STATE_PREFIX))
        self.inherited_states = states
        newest = None
        for name in states:
            try:
                candidate = _read_memfd(self._stored.pop(name))
            except (OSError, ValueError) as exc:
                log.warning("fdstore_state_unreadable", name=name, error=str(exc))
                continue
            if newest is None or candidate.get("saved_at", 0) > newest.get("saved_at", 0):
                newest = candidate
        state = newest if newest is not None else schema.write(_empty_state())
        if not schema.readable(state):
            raise HandoverError(f"the fd store holds state version {state.get('version')}, "
                                "which this chatd does not read")
        self.fds = [self._stored.pop(name, -1) for name in state["fdnames"]]
        if self.fds[state["listener"]] < 0:
            if not self._activation:
                raise HandoverError("the fd store holds no listening socket and systemd "
                                    "passed none")
            self.fds[state["listener"]] = self._activation.pop(0)
            self.passed = True
        for key in ("tls_listener", "metrics", "irc_listener", "irc_tls_listener"):
            # not kept: bound anew if configured
            if state.get(key) is not None and self.fds[state[key]] < 0:
                state[key] = None
        state["admin"] = state["pidfile"] = None  # bound anew: /run/chatd went with the stop
        for fd in self._activation:  # a second socket unit socket: not ours to serve
            os.close(fd)
        self.state = state
        return state

    def serving(self, admin=None) -> None:
        """Nobody to tell, as for :meth:`ready`."""

    def fail(self, reason: str) -> None:
        """Nobody to tell (cli.py calls this on a takeover that cannot start)."""

    def orphans(self) -> list[tuple[int, socket.socket]]:
        """Kept client connections the state does not know: (their id, socket)."""
        found = []
        for name, fd in sorted(self._stored.items()):
            if name.startswith(CLIENT_PREFIX) and name[len(CLIENT_PREFIX):].isdigit():
                found.append((int(name[len(CLIENT_PREFIX):]), socket.socket(fileno=fd)))
            else:
                os.close(fd)  # a listener the state does not name: this config has none
        self._stored.clear()
        return found


def split(passed: list[tuple[str, int]]) -> tuple[list[int], dict[str, int]]:
    """systemd's descriptors -> (socket activation's, in order; the store's, by name)."""
    activation = [fd for name, fd in passed if not is_ours(name)]
    stored = {name: fd for name, fd in passed if is_ours(name)}
    return activation, stored


def _read_memfd(fd: int) -> dict:
    with open(fd, "rb", closefd=True) as file:
        file.seek(0)
        state = json.loads(file.read())
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    return state


def _empty_state() -> HandoverState:
    """Descriptors kept but no state to go with them (a crash before the first write)."""
    return HandoverState(started_at=time.time(), next_client_id=1, listener=0,
                         hub={"guest_next": 1, "departed": {}}, closed_out=[0, 0], clients=[],
                         pid=None, chatd_version=None, fdnames=[LISTEN], final=False)
