"""Room state across nodes (SPEC §13: "all of this is cluster-wide"): a room's founder,
topic, modes and lists, the same on every node.

- ``chatd:rooms`` (a hash: folded room name -> the state, sealed and encrypted: a key is a
  secret, and whom a room bans is its own business) holds every room's state that is not the
  blank one: registered rooms for good, others while they have members. A node reads it all
  when it joins the cluster (:meth:`RoomStates.load`).
- A change is written there and told down the stream as ``["state", ROOM, HIDDEN TEXT]``
  (the text encrypted as private lines are), in order with the room lines that announce it;
  the reader hands it to the hub (:meth:`RoomStates.receive`: checked as any record read back
  is, roomstate.RoomState.from_record).

Two nodes changing one room at the same moment: each applies its own change at once and the
other's when it reads it, so each ends with the other's, until the room's next change (a
change carries no version yet: docs/cluster.md). A room's
maker is its operator on its own node only (a client id means nothing elsewhere).

Used as the hub's room keeper in cluster mode (core/stewardship.py ``keep_room``,
``drop_room``), and by the reader (``state`` lines).
"""

from __future__ import annotations

import json

import structlog

from chatd.cluster.codec import Rejected
from chatd.cluster.keys import ROOMS, STREAM
from chatd.core.roomstate import RoomState
from chatd.text import fold, is_valid_name

log = structlog.get_logger("chatd.cluster")

#: Room states a node loads at start at most (docs/protocol.md §3).
MAX_ROOM_STATES = 100_000
_BLANK = RoomState()


class RoomStates:
    def __init__(self, link, publisher) -> None:
        self.link = link
        self.publisher = publisher
        self.hub = None  # set by the bus's start()

    # -- this node's changes (the hub's keeper) ---------------------------------------------

    def keep_room(self, name: str, state: RoomState) -> None:
        """``state`` is room ``name``'s now, on every node (the blank state: forgotten)."""
        state = state.change(creator=None)
        key = fold(name)
        if state == _BLANK:
            self.publisher.write(("hdel", (ROOMS, key)))
            plain = "null"
        else:
            plain = json.dumps({"name": name, **state.record()})
            self.publisher.write(("hset", (ROOMS, key, self.link.seal.seal_hidden(
                f"{ROOMS}/{key}", plain))))
        hidden = self.link.seal.hide(f"{STREAM}/{self.link.node}", plain)
        self.publisher.line(json.dumps(["state", name, hidden]))

    def drop_room(self, name: str) -> None:
        self.keep_room(name, _BLANK)

    # -- what the others say ----------------------------------------------------------------

    def load(self) -> list[tuple[str, RoomState]]:
        """Every room's state in Redis (at start, before the hub lock); what fails its check
        is skipped with a warning. Raises nothing: a node that cannot read them starts with
        none, and learns each from the next change."""
        try:
            values = self.link.redis.hgetall(ROOMS)
        except Exception as exc:  # the redis client's errors
            log.warning("room_states_unread", error=str(exc))
            return []
        found = []
        for key, value in list(values.items())[:MAX_ROOM_STATES]:
            key = key.decode(errors="replace") if isinstance(key, bytes) else key
            try:
                found.append(self._state(self.link.seal.open_hidden(f"{ROOMS}/{key}", value),
                                         key))
            except (Rejected, ValueError) as exc:  # (a value that is not even text)
                self.link.rejected("room", str(exc) or "not a room state", room=key[:64])
        return found

    def receive(self, writer: str, item: list) -> None:
        """``["state", ROOM, HIDDEN TEXT]`` from ``writer`` (the reader thread)."""
        if len(item) != 3 or not (isinstance(item[1], str) and is_valid_name(item[1])):
            raise Rejected("not a room state")
        try:
            plain = self.link.seal.reveal(f"{STREAM}/{writer}", item[2])
        except ValueError:
            raise Rejected("not a room state") from None
        if plain == "null":
            self.hub.receive_room_state(item[1], _BLANK)
            return
        found = self._state(plain, fold(item[1]))
        if found is None:
            raise Rejected("not a room state")
        self.hub.receive_room_state(*found)

    @staticmethod
    def _state(plain: str, key: str) -> tuple[str, RoomState] | None:
        """(name, state) from a record's text, if it is one and of room ``key``."""
        try:
            record = json.loads(plain)
        except ValueError:
            raise Rejected("not a room state") from None
        name = record.get("name") if record.__class__ is dict else None
        state = RoomState.from_record(record)
        if state is None or not (isinstance(name, str) and is_valid_name(name)) \
                or fold(name) != key:
            raise Rejected("not a room state")
        return name, state
