"""One connection's output, as the flusher thread sees it: a backlog and where the connection
is in its ending.

A connection ends in one of a few ways (a kick, an overflow, a reset, its session finishing),
and they overlap: a kicked client may overflow while its notice drains, a finished session may
leave a backlog to drain. One ``state`` says where it is, so every rule about what may still be
sent reads as a comparison, not a mix of flags::

    OPEN ──disconnect──> CLOSING ─┐        (notice drains, reading is shut)
      │                    │      ├─finish─> LINGERING ──drained or deadline──> CLOSED
      └──overflow/reset──> DEAD ──┘ finish ─────────────────────────────────────> CLOSED

``CLOSING`` and ``LINGERING`` still write (``state <= LINGERING``); ``DEAD`` and ``CLOSED``
write nothing. The session
reads ``close_reason`` after its ``recv`` returns: the flusher sets it before it wakes the
session (shutdown), so the session always sees why.
"""

from __future__ import annotations

import socket

from chatd.core.closing import Close

# The states, as plain ints: the fan-out compares one per recipient, and an enum member's
# lookup costs five times a global's there.
OPEN = 0  # output flows
CLOSING = 1  # told to go (kick, idle, shutdown): the notice drains, reading is shut
LINGERING = 2  # the session is done; the backlog drains until a deadline
DEAD = 3  # no more output (overflow, reset); the session has been woken
CLOSED = 4  # the socket is closed
STATE_NAMES = ("open", "closing", "lingering", "dead", "closed")  # for debugging and logs


class ChannelError(Exception):
    """What ``Outbox.tls`` raises when the peer's records cannot be read (net/tls.py's
    ``TlsError`` is one): the session ends the connection and logs the message, so core
    catches it without knowing the transport."""


class Outbox:
    """Per-client output state, owned by the flusher thread, except ``queued_in`` and
    ``over``, which the flusher's lock guards (the submitters' side of the count)."""

    __slots__ = (
        "backlog",
        "backlog_bytes",
        "bytes_out",
        "close_reason",
        "fd",
        "ignoring",
        "linger_until",
        "lines_out",
        "over",
        "protocol",
        "queued_in",
        "queued_out",
        "sock",
        "speaks",
        "state",
        "tls",
    )

    def __init__(self, sock: socket.socket, protocol) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        #: What renders events for this client (a protocol package's object: ``line``,
        #: ``lines``, ``history``); rooms join their batches once per protocol.
        self.protocol = protocol
        #: What rooms group this reader by and render its room lines with (protocol.py):
        #: shared by every connection of the protocol, where ``protocol`` may be its own.
        #: Replaced by its session thread under the hub lock (Membership.respeak).
        self.speaks = protocol.speaks
        self.state = OPEN
        self.backlog: list = []  # bytes / memoryview chunks the kernel has not taken yet
        self.backlog_bytes = 0
        self.bytes_out = 0
        self.lines_out = 0
        #: Why the flusher ended this connection (sendq, kick, shutdown...), or None.
        self.close_reason: Close | None = None
        self.linger_until = 0.0
        #: The folded nicks whose lines this client is not sent (core/ignoring.py): written
        #: (replaced whole) by its session thread, read by the flusher and the hub.
        self.ignoring: frozenset = frozenset()
        #: A TlsChannel (net/tls.py) on the TLS listener: output is encrypted per client, input
        #: decrypted by the session (``decrypt``, raising :class:`ChannelError`).
        self.tls = None
        #: Bytes submitted for this client (Flusher._lock) and bytes of those the flusher has
        #: handled (flusher thread): the difference is what waits in the flusher's queue.
        #: Two counters with one writer each, so neither side takes the other's lock per item.
        self.queued_in = 0
        self.queued_out = 0
        self.over = False  # a submit passed sendq_bytes: drop the rest (Flusher._lock)

    @property
    def queued(self) -> int:
        """Output held for this client: in the flusher's queue and in the backlog (any thread;
        int reads, so a moment's figure)."""
        return self.backlog_bytes + self.queued_in - self.queued_out
