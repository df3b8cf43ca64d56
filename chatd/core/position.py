"""Where a reader stands in a room's history, as SPEC §12's "what you missed" needs it:
:class:`Position`. Pure; the tails (tail.py) make positions, the accounts stores keep them."""

from __future__ import annotations

#: Nodes a position keeps a time for, at most (a cluster has a few).
MAX_ORIGINS = 1024


class Position:
    """Where a reader stands in a room's history (SPEC §12 "what you missed"): for each node
    the room's lines came from, the time of the newest of its lines the reader was sent.

    A line's time is given once, by the node it was said on, under the room's lock there
    (tail.Tail.record), and travels with it (cluster/publisher.py), so every node holds the
    same time for the same line and compares the same numbers; each node's lines of a room
    reach the others in the order of their times. A line is *after* the position if its
    time is past its node's entry. A node the reader had no line from is compared with the
    newest time of all (``floor``): a line it had said before then would have reached the
    reader's node and been sent to the reader, so what it says is after. On a single node
    this is one time, as it always was.

    Immutable; ``record()`` is what the accounts store keeps (JSON: ``{node: time}``), and
    :meth:`from_record` reads it back, or a bare number (the single node's first format)."""

    __slots__ = ("origins", "floor")

    def __init__(self, origins: dict) -> None:
        self.origins = origins
        self.floor = max(origins.values(), default=0.0)

    def after(self, entry) -> bool:
        return entry.ts > self.origins.get(entry.origin, self.floor)

    @property
    def time(self) -> float:
        """When the reader stood there (the newest line it was sent): what users are told."""
        return self.floor

    def record(self) -> dict:
        return dict(self.origins)

    @classmethod
    def from_record(cls, value) -> Position:
        """A stored position; ValueError for anything but ``{node: time}`` or a time."""
        if value.__class__ in (int, float):
            value = {"": value}
        if value.__class__ is not dict or len(value) > MAX_ORIGINS:
            raise ValueError("not a position")
        origins = {}
        for origin, ts in value.items():
            if origin.__class__ is not str or len(origin) > 64 or not origin.isprintable() \
                    or ts.__class__ not in (int, float) or not 0 <= ts < 253402300800:
                raise ValueError("not a position")
            origins[origin] = float(ts)
        return cls(origins)

    def __eq__(self, other) -> bool:
        return isinstance(other, Position) and self.origins == other.origins

    def __repr__(self) -> str:
        return f"Position({self.origins!r})"


#: Where a reader stands in a room it got no line of.
START = Position({})
