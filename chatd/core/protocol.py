"""What core asks of a client's protocol: the protocol seam.

Core (hub, rooms, flusher) speaks events; each connection's ``Outbox`` carries the object that
turns them into its bytes. A protocol package (``chatd/line/`` today) provides one such object;
a second protocol is a second package, and nothing here changes. Objects are compared by
identity: rooms join their batches once per protocol object.
"""

from __future__ import annotations

from typing import Protocol as _Protocol


class Protocol(_Protocol):
    name: str  # shown by chatctl list and counted by /metrics

    def line(self, event) -> bytes:
        """One event as the exact bytes a client of this protocol receives."""

    def lines(self, events) -> bytes:
        """Several events as one buffer, so they leave in one send."""

    def history(self, room: str, entries: list) -> bytes:
        """A room's replay (SPEC §10): the whole block for ``entries`` (history.Entry)."""
