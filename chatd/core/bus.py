"""What crosses a node boundary, behind one small interface beside the hub (docs/cluster.md).

The hub owns nicks, rooms and membership on this node and fans room lines out to local
members through the room logs. A *bus* carries the rest: other nodes' members and lines, and
the claims that keep nicks unique across nodes. The hub calls it at the few points where a
change must reach the cluster, and asks it about other nodes' members for ``/who``,
``/rooms`` and ``/msg``; nothing else in chatd knows whether there is a cluster.

:class:`LocalBus` is the single node: every question has the answer "nobody else", every
publication goes nowhere, so the hub behaves exactly as it did before there was a bus.
chatd/cluster/ is the cluster.

The methods the hub calls, and the rules they keep:

- ``claim(nick, client)`` / ``release(nick, client)``: a cluster-wide nick. May do network
  I/O, so the hub never calls them while holding its lock; ``claim`` raises
  :class:`ClusterUnavailable` when the cluster cannot be asked.
- ``reclaim(nick)``: have the node whose client holds ``nick`` give it up (an account's
  login there: identity.py ``give_up``); True once it did, and released its claim. Network
  I/O, waits for that node's answer: never under the hub lock.
- ``guest_number()``: the next guest number, unique cluster-wide (None: count locally).
- ``publish(room, event, stamp)`` (``stamp``: the time the history gave a chat line, which
  every node keeps for it: position.Position; a chat line is published under its room's
  lock, Room.post), ``member(client)``, ``gone(client)``: queued, never blocking:
  safe under the hub lock and a room lock, in the order they happened.
- ``remote_members(room)``, ``remote_rooms()``, ``remote_nick(nick)``: other nodes' members
  as this node last heard of them (no I/O).
- ``send_private(nick, event)``: a private line for a nick on another node (queued).
- ``publish_all(event)``: an operator's line for every room on every other node (queued).

And for the admin side (on admin threads; these may do network I/O): ``nodes()`` (the other
live nodes), ``remote_clients(room)`` (their clients, as each node answers for its own),
``locate(target)`` (a client on another node: (node, id, nick)), ``route(node, action,
client_id, args)`` (kick/mute/unmute carried out there, through the handler given to
``on_command``, waiting for that node's answer: True, False if the client was gone, None if
none came in time), ``ban(record)``/``unban(address)`` (for every
node), ``share_bans(records)`` (at start: this node's bans into the cluster's, and back), and ``client_ids()``, the ids the listeners hand
out (unique cluster-wide).
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar

#: The uid of the operator whose admin request this thread serves (admin.py sets it on each
#: connection's thread): an action routed to another node is logged there with it.
ASKER_UID: ContextVar[int | None] = ContextVar("asker_uid", default=None)


class ClusterUnavailable(Exception):
    """The cluster cannot be asked right now (docs/protocol.md §1: ``cluster unavailable``)."""


class LocalBus:
    """A single node: nothing crosses a node boundary."""

    node = None

    def start(self, hub) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def claim(self, nick: str, client) -> bool:
        return True

    def release(self, nick: str, client) -> None:
        pass

    def reclaim(self, nick: str) -> bool:
        return False  # no other node holds anything

    def guest_number(self) -> int | None:
        return None

    def publish(self, room: str, event, stamp: float | None = None) -> None:
        pass

    def member(self, client) -> None:
        pass

    def gone(self, client) -> None:
        pass

    def away(self, nick: str, text: str | None, room: str | None = None) -> None:
        pass

    def remote_away(self, nick: str) -> str | None:
        return None

    def remote_members(self, room: str) -> list[str]:
        return []

    def remote_rooms(self) -> dict[str, tuple[str, int]]:
        return {}

    def remote_nick(self, nick: str) -> str | None:
        return None

    def send_private(self, nick: str, event) -> None:
        pass

    def publish_all(self, event) -> None:
        pass

    def nodes(self) -> list[dict]:
        return []

    def remote_clients(self, room: str | None = None) -> list[dict]:
        return []

    def locate(self, target):
        return None

    def describe(self, nick: str):
        """(node, checks.Member) of ``nick`` on another node, or None (``/whois``)."""
        return None

    def describe_many(self, nicks: list[str]) -> dict:
        """folded nick -> checks.Member, of those of ``nicks`` on other nodes (``WHO #room``)."""
        return {}

    def whowas(self, nick: str) -> list[tuple[str, str, str, float]]:
        """Other nodes' clients that held ``nick`` and left, newest first: (nick, user name,
        real name, when) as WHOWAS shows them (cluster/departures.py)."""
        return []

    def route(self, node: str, action: str, client_id: int, args: dict) -> bool | None:
        return False  # locate() found no other node, so nothing is ever routed

    def on_command(self, handler) -> None:
        pass

    def client_ids(self):
        return itertools.count(1)

    def ban(self, record: dict) -> None:
        pass

    def unban(self, address: str) -> None:
        pass

    def share_bans(self, records: list[dict]) -> list[dict]:
        """The bans in force: on a single node, the state file's (``records``) alone."""
        return records
