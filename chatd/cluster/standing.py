"""Where this node's accounts stand in their rooms, kept in Redis as they go, so that a node
killed outright (``kill -9``, power loss) loses no account's place (SPEC §12, "what you
missed"; docs/cluster.md, "Accounts").

A departure writes the account's positions itself (the account's ``account-rooms`` value).
A crash writes nothing, so while an account is logged in here its value says *live on this
node* instead (cluster/accounts.py ``set_live``), and at every lease renewal (a third of
``node_timeout``; the publisher thread) this node writes, for each room one of its accounts
is in, where that room's history stands (``seen:NODE``: folded room -> ``[RUN, POSITION]``,
sealed; one value per room, not per account). A login elsewhere that finds *live on NODE*
reads the room's value there: lines said after it are what the account missed. What it
may get again is what that node delivered in the last renewal period before it died.

RUN is the node's start time (Link.started_at): a value written by an earlier run of a node
of the same name describes another run's rooms and is not used. A room none of its accounts
is in any more is dropped from the hash at the next renewal, and the hash expires a day after
its last write.
"""

from __future__ import annotations

import json

import structlog

from chatd.cluster.codec import Rejected
from chatd.cluster.keys import SEEN
from chatd.cluster.link import scrub
from chatd.core.position import Position
from chatd.text import fold

log = structlog.get_logger("chatd.cluster")

SEEN_TTL_MS = 24 * 3600 * 1000


class Standing:
    def __init__(self, link) -> None:
        self.link = link
        self._written: dict = {}  # folded room -> the record written last (publisher thread)

    @property
    def run(self) -> str:
        return f"{self.link.started_at:.6f}"

    def record(self, hub) -> None:
        """Write the positions of the rooms this node's accounts are in that changed since
        the last renewal (publisher thread). A failure is logged and tried again next time."""
        link = self.link
        key = SEEN + link.node
        now = {fold(room): position.record() for room, position in hub.account_positions()}
        changed = {room: record for room, record in now.items()
                   if self._written.get(room) != record}
        gone = [room for room in self._written if room not in now]  # no account there now
        if not changed and not gone:
            return
        try:
            with link.redis.pipeline(transaction=False) as pipe:
                if changed:
                    pipe.hset(key, mapping={room: link.seal.seal(f"{key}/{room}", json.dumps(
                        [self.run, record])) for room, record in changed.items()})
                if gone:
                    pipe.hdel(key, *gone)
                pipe.pexpire(key, SEEN_TTL_MS)
                pipe.execute()
        except Exception as exc:  # the redis client's errors: the next renewal tries again
            log.warning("cluster_write_failed", key=key, error=scrub(str(exc), link.url)[:200])
            return
        self._written = now

    def lookup(self, node: str, run: str, room: str) -> Position | None:
        """Where ``node``'s run ``run`` last said ``room`` stood; None if it did not (or the
        value fails its check: one warning)."""
        link = self.link
        key = SEEN + node
        value = link.redis.hget(key, fold(room))
        if value is None:
            return None
        try:
            written_run, record = json.loads(link.seal.open(f"{key}/{fold(room)}", value))
            if written_run != run:
                return None
            return Position.from_record(record)
        except (Rejected, ValueError, TypeError, RecursionError) as exc:
            link.rejected("position", str(exc) or "bad position", node=node)
            return None
