"""The handover state: what a chatd hands the next one (an upgrade, systemd's fd store), as
named records, and the one place that writes them as the versioned dict and reads them back.

The dict is the format on the wire (JSON for the spawn handover and the fd store, marshal for
the exec): a running older chatd writes it and this one reads it, so its keys and values do not
change within a version (:data:`STATE_VERSION`). Descriptors are named by their index in the
list that travels with the state; bytes (unread input, unsent output) are base64 strings.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chatd import __version__
from chatd.core.ignoring import MAX_IGNORES
from chatd.text import is_valid_name

#: The state layout this chatd writes; READABLE are the ones it can read.
STATE_VERSION = 1
READABLE_STATE_VERSIONS = (1,)
#: The session state's byte fields, base64 in the dict.
_SESSION_BYTES = ("held", "unread")
#: The longest away text a state file may give a client: it was one line of its input, and
#: max_line_bytes is at most 1 MiB (config/settings.py), so this only refuses nonsense.
MAX_AWAY = 1 << 20


def pack_bytes(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unpack_bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


@dataclass
class ClientRecord:
    """One plain client: who it is, its counters, its unsent output and its session's state
    (Session.handover_state, bytes as bytes)."""

    id: int
    fd: int
    ip: str
    peer: str
    nick: str
    room: str
    muted: bool
    connected_at: float
    idle: float
    bytes_in: int
    lines_in: int
    room_messages: int
    private_messages: int
    bytes_out: int
    lines_out: int
    backlog: bytes
    session: dict
    #: Every room it is in, ``room`` (its current one) first; an older chatd wrote none.
    rooms: list[str] = field(default_factory=list)
    account: str | None = None
    protocol: str = "line"  # the name of what it speaks (core/protocol.py)
    away: str | None = None  # /away's text (SPEC §13)
    ignores: list[str] = field(default_factory=list)  # the nicks it ignores, as typed

    @classmethod
    def of(cls, client, now: float, fd: int, backlog: bytes, session: dict) -> ClientRecord:
        # positional, in the order of the fields above: keywords cost a microsecond a client,
        # and an upgrade makes one record per client while they all wait (of, write, read)
        outbox = client.outbox
        room = client.room.name if client.room is not None else None  # (IRC: maybe in none)
        rooms = client.rooms
        return cls(client.id, fd, client.ip, client.peer, client.nick, room, client.muted,
                   client.connected_at, now - client.last_active, client.bytes_in,
                   client.lines_in, client.room_messages, client.private_messages,
                   outbox.bytes_out, outbox.lines_out, backlog, session,
                   [room] if len(rooms) == 1 else rooms_of(client), client.account,
                   outbox.protocol.name, client.away, list(client.ignores))

    def write(self) -> dict:
        session = dict(self.session)
        for key in _SESSION_BYTES:
            session[key] = pack_bytes(session[key])
        return {
            "id": self.id, "fd": self.fd, "ip": self.ip, "peer": self.peer,
            "nick": self.nick, "room": self.room, "muted": self.muted,
            "connected_at": self.connected_at, "idle": self.idle,
            "bytes_in": self.bytes_in, "lines_in": self.lines_in,
            "room_messages": self.room_messages, "private_messages": self.private_messages,
            "bytes_out": self.bytes_out, "lines_out": self.lines_out,
            "backlog": pack_bytes(self.backlog), "session": session,
            "rooms": list(self.rooms), "account": self.account, "protocol": self.protocol,
            "away": self.away, "ignores": list(self.ignores)}

    @classmethod
    def read(cls, record: dict) -> ClientRecord:
        session = dict(record["session"])
        for key in _SESSION_BYTES:
            session[key] = unpack_bytes(session[key])
        room = record["room"]
        rooms = record.get("rooms")  # an older chatd knew one room a client and no accounts
        return cls(record["id"], record["fd"], record["ip"], record["peer"], record["nick"],
                   room, record["muted"], record["connected_at"], record["idle"],
                   record["bytes_in"], record["lines_in"],
                   # an older chatd did not count these (metrics, issue 13)
                   record.get("room_messages", 0), record.get("private_messages", 0),
                   record["bytes_out"], record["lines_out"], unpack_bytes(record["backlog"]),
                   session, [room] if rooms == [room] else
                   _names(rooms) or ([room] if _optional_name(room) else []),
                   _optional_name(record.get("account")), str(record.get("protocol", "line")),
                   _away(record.get("away")), _names(record.get("ignores"))[:MAX_IGNORES])


def _away(value) -> str | None:
    """An away text from a state file (input): a printable string within a line, or none."""
    if value.__class__ is str and value.isprintable() and len(value) <= MAX_AWAY:
        return value
    return None


def rooms_of(client) -> list[str]:
    """The client's rooms by name, its current room first (the one a line client is in)."""
    current = client.room
    return [room.name for room in sorted(client.rooms, key=lambda room: room is not current)]


def _names(value) -> list[str]:
    """A list of names from a state dict (a file: input like any other), or [] if it is not
    one."""
    if value.__class__ is not list or not all(_optional_name(v) for v in value):
        return []
    return value


def _optional_name(value) -> str | None:
    return value if value.__class__ is str and is_valid_name(value) else None


class AdminRecord(NamedTuple):
    fd: int
    path: str
    inode: int


class PidfileRecord(NamedTuple):
    fd: int
    path: str


class Asker(NamedTuple):
    """The chatctl connection that asked for an exec upgrade: the new image answers it."""

    fd: int
    id: Any


class ExecRecord(NamedTuple):
    """The exec's own part: where each descriptor is (they keep their numbers), when the
    clients began to wait, and who asked."""

    fds: list
    frozen: float
    asker: Asker | None


@dataclass
class HandoverState:
    """The whole state; ``listener`` and the other sockets are indices into the descriptors.
    ``fdnames`` and ``final`` are the fd store's, ``exec`` the exec's, ``saved_at`` is set
    when the fd store writes it."""

    started_at: float
    next_client_id: int
    listener: int
    hub: dict
    closed_out: list
    clients: list[ClientRecord]
    tls_listener: int | None = None
    admin: AdminRecord | None = None
    pidfile: PidfileRecord | None = None
    metrics: int | None = None  # the metrics endpoint's socket; an older chatd ignores it
    irc_listener: int | None = None  # the IRC listeners' sockets, likewise
    irc_tls_listener: int | None = None
    pid: int | None = field(default_factory=os.getpid)
    chatd_version: str | None = __version__
    version: int = STATE_VERSION
    fdnames: list[str] | None = None
    final: bool | None = None
    exec: ExecRecord | None = None
    saved_at: float | None = None


def write(state: HandoverState) -> dict:
    """The state as the versioned dict every chatd reads."""
    data = {
        "version": state.version, "chatd_version": state.chatd_version, "pid": state.pid,
        "started_at": state.started_at, "next_client_id": state.next_client_id,
        "listener": state.listener, "tls_listener": state.tls_listener,
        "admin": None if state.admin is None else state.admin._asdict(),
        "pidfile": None if state.pidfile is None else state.pidfile._asdict(),
        "metrics": state.metrics, "irc_listener": state.irc_listener,
        "irc_tls_listener": state.irc_tls_listener, "hub": state.hub, "closed_out": list(state.closed_out),
        "clients": [record.write() for record in state.clients],
    }
    if state.fdnames is not None:
        data.update(fdnames=list(state.fdnames), final=state.final)
    if state.exec is not None:
        asker = state.exec.asker
        data["exec"] = {"fds": list(state.exec.fds), "frozen": state.exec.frozen,
                        "asker": None if asker is None else asker._asdict()}
    if state.saved_at is not None:
        data["saved_at"] = state.saved_at
    return data


def read(data: dict) -> HandoverState:
    """A state dict of a readable version (:func:`readable` says) as records."""
    admin, pidfile = data.get("admin"), data.get("pidfile")
    return HandoverState(
        version=data["version"], chatd_version=data.get("chatd_version"), pid=data.get("pid"),
        started_at=data["started_at"], next_client_id=int(data["next_client_id"]),
        listener=data["listener"], tls_listener=data.get("tls_listener"),
        admin=None if admin is None else AdminRecord(admin["fd"], admin["path"], admin["inode"]),
        pidfile=None if pidfile is None else PidfileRecord(pidfile["fd"], pidfile["path"]),
        metrics=data.get("metrics"), irc_listener=data.get("irc_listener"),
        irc_tls_listener=data.get("irc_tls_listener"), hub=data["hub"], closed_out=list(data["closed_out"]),
        clients=[ClientRecord.read(record) for record in data["clients"]],
        fdnames=data.get("fdnames"), final=data.get("final"), saved_at=data.get("saved_at"),
        exec=read_exec(data) if data.get("exec") is not None else None)


def readable(data: dict) -> bool:
    return data.get("version") in READABLE_STATE_VERSIONS


def read_exec(data: dict) -> ExecRecord:
    """The exec's part alone: what the new image needs before anything else."""
    exec_ = data["exec"]
    asker = exec_["asker"]
    return ExecRecord(exec_["fds"], exec_["frozen"],
                      None if asker is None else Asker(asker["fd"], asker["id"]))


def origin(data: dict) -> dict:
    """Who handed over and how many clients: for the ``resumed`` event and chatctl."""
    return {"old_pid": data.get("pid"), "old_version": data.get("chatd_version"),
            "clients": len(data.get("clients", ()))}


class Descriptors:
    """The descriptors a state refers to, in order, with the name each has in systemd's fd
    store (fdstore.py)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.names: list[str] = []

    def add(self, name: str, sock_or_fd=None) -> int:
        """Its index in the state; without a descriptor only the name counts (the fd
        store's running state, whose descriptors are in the store already)."""
        if sock_or_fd is not None:
            self.fds.append(sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno())
        self.names.append(name)
        return len(self.names) - 1


@dataclass(frozen=True)
class Sources:
    """What the state is taken from: the service's parts, not the service (built by it)."""

    hub: Any
    flusher: Any
    listener: Any
    tls_listener: Any
    admin: Any
    metrics: Any
    pidfile: Any
    started_at: float
    client_ids: Any  # itertools.count: the next id is taken (and so not given again)
    irc_listener: Any = None
    irc_tls_listener: Any = None
