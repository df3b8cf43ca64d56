"""What core asks of a client's protocol: the protocol seam.

Core (hub, rooms, flusher, session) speaks events; each connection's ``Outbox`` carries the
object that turns them into its bytes (output) and makes its :class:`Reader`, which turns its
bytes into lines and acts on them (input). A protocol package (``chatd/line/`` today) provides
one such object; a second protocol is a second package, and nothing in core changes. Objects
are compared by identity: rooms join their batches once per protocol object.
"""

from __future__ import annotations

from typing import Protocol as _Protocol


class Reader(_Protocol):
    """One connection's input side, made by its protocol for its session (session.py), and
    used by that session's thread only. The session receives, decrypts, paces (one flood
    token a line), parks for an upgrade and bounds the unread input; the reader does the rest."""

    #: What :meth:`next_line` returns in place of a line over the protocol's limit.
    too_long: object
    #: Bytes received and not yet taken as lines: what ``recvq_bytes`` bounds.
    pending_bytes: int

    def feed(self, data: bytes) -> None:
        """Bytes received (after TLS): buffered, with anything the protocol strips (telnet)."""

    def next_line(self):
        """The next complete line (bytes), :attr:`too_long`, or None when none is buffered."""

    def line_too_long(self) -> str:
        """The error text a client is told in place of a line over the limit."""

    def handle(self, raw: bytes) -> None:
        """One complete line for this session: parse it, act on it (the hot path: the session
        binds it once and calls it per line)."""

    def partial_timeout(self) -> float | None:
        """How long to wait for the rest of a partial line before it is taken as a whole one
        (:meth:`take_partial`); None: wait for the end of the line however long it takes."""

    def take_partial(self) -> bytes | None:
        """The partial line buffered, as a line, once :meth:`partial_timeout` has passed."""

    def last_partial(self) -> bytes | None:
        """At EOF: the partial line left, if the protocol takes it as a line; else None."""

    def state(self) -> dict:
        """The reader's part of an upgrade's handover state (plain data, bytes as bytes)."""

    def restore(self, state: dict) -> None:
        """Go on from :meth:`state` of the process before an upgrade."""


class RoomRenderer(_Protocol):
    """How one protocol renders room lines (Room.speaking): rooms compare it by identity."""

    def renderer(self, room: str):
        """A function from a room line's event to its bytes, for room ``room``: an IRC line
        names its channel, a line-protocol one does not (then the same function for all)."""


class Protocol(_Protocol):
    """A connection's output side and the maker of its reader. One object may serve every
    connection (the line protocol's), or each connection may have its own (IRC's, which
    addresses replies to the client's nick): rooms render by :attr:`speaks`, shared by every
    connection of the protocol, so a room line is rendered once per protocol, not per member."""

    name: str  # shown by chatctl list and counted by /metrics
    #: What rooms group this connection's readers by and render room lines with
    #: (:meth:`RoomRenderer.renderer`): the same object for every connection of the protocol.
    speaks: RoomRenderer
    #: True: the client picks its nick before it is registered (IRC's NICK and USER), so the
    #: session does not register it on connect; its reader does (Hub.take_nick).
    names_itself: bool
    #: True: a client may be in no room (IRC, until it JOINs); False: always in one (the line
    #: protocol's lobby), so a kick or a login with nowhere to go puts it in the lobby.
    roomless: bool
    #: True: the client is told (events.AwayNoticed) when someone who shares a room with it
    #: goes away or comes back, and when someone away joins one of its rooms (IRC's
    #: ``away-notify``); may change while connected.
    follows_away: bool
    #: The error text for a client that cannot be registered (cluster mode: no nick is sure
    #: to be unique while the cluster is unreachable).
    cluster_unavailable: str

    def line(self, event) -> bytes:
        """One event as the exact bytes a client of this protocol receives."""

    def lines(self, events) -> bytes:
        """Several events as one buffer, so they leave in one send."""

    def history(self, room: str, entries: list) -> bytes:
        """A room's replay (SPEC §10): the whole block for ``entries`` (history.Entry)."""

    def missed(self, room: str, entries: list, since: float, gone_before: float | None) -> bytes:
        """What an account missed in a room (SPEC §12): the block for ``entries``, the lines
        after ``since``; ``gone_before``: older lines are gone from before this time."""

    def reader(self, session) -> Reader:
        """A new connection's input side, for its session (core/session.py)."""

    def greeting(self, config) -> list:
        """The events a client is told as the session registers it (welcome, MOTD)."""
