"""RedisBus: the cluster as the hub sees it (bus.py has the interface and its rules).

This module composes the parts and answers the hub's questions; each part has one job:
codec.py (the trust boundary: seals and checks whatever crosses Redis), publisher.py (what
this node tells the others), reader.py (what they tell it), leases.py (who is alive), routing.py
(admin actions across nodes), roster.py (the others' members as last heard), departures.py
(WHOWAS's shared list), counters.py (guest numbers, client-id blocks, nick releases).
docs/cluster.md describes the keys and the design.

Threads: the publisher and the reader, started by :meth:`RedisBus.start`; claims and guest
numbers are asked for on the calling session thread (outside the hub lock); admin threads ask
routing. Locks: the publisher's queue lock and the roster's lock, each taken after the hub lock,
never before, and never held across I/O.
"""

from __future__ import annotations

import threading
import time

import structlog

from chatd.cluster import departures, wire
from chatd.cluster.checks import Validator, node_name
from chatd.cluster.checks import name as checked_name
from chatd.cluster.codec import Rejected, Seal, text
from chatd.cluster.counters import ClientIds, Counters
from chatd.cluster.keys import (
    HISTORY,
    MEMBERS,
    NICKS,
    NODES,
    REAP,
    RELEASE,
    REPLACE,
    STREAM,
    TYPES,
    node_stream,
)
from chatd.cluster.leases import Leases, member_record, room_line
from chatd.cluster.link import ClusterStartError, Link, scrub
from chatd.cluster.publisher import Publisher, history_entries
from chatd.cluster.reader import MAX_STREAMS, Reader, position
from chatd.cluster.roomstates import RoomStates
from chatd.cluster.roster import Roster
from chatd.cluster.routing import Routing
from chatd.cluster.standing import Standing
from chatd.core.bus import ClusterUnavailable
from chatd.core.tail import KINDS
from chatd.text import fold

log = structlog.get_logger("chatd.cluster")

SOCKET_TIMEOUT = 5.0
#: How long a join that read history from Redis waits for the reader to reach that point.
CATCH_UP_SECONDS = 2.0
#: How often a start reads the snapshot again because a node joined while it was read.
SNAPSHOT_TRIES = 3


def _connect(url: str):
    import redis  # only cluster mode needs the client library

    # Bytes, not text: whatever is in Redis is input, and one byte that is not UTF-8 must be
    # one rejected value (codec.py), not a decoding error inside the client library.
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=SOCKET_TIMEOUT, decode_responses=False)


class RedisBus:
    def __init__(self, url: str, node: str, secret: bytes, node_timeout: float = 10.0,
                 history_lines: int = 0, max_line_bytes: int = 1024) -> None:
        self.link = Link(url, node, Seal(secret), Validator(max_line_bytes))
        self.history_lines = history_lines  # 0: no history is written
        self.node_timeout = node_timeout
        self.roster = Roster()
        self.publisher = Publisher(self.link, history_lines)
        self.counters = Counters(self.link)
        self.standing = Standing(self.link)
        self.leases = Leases(self.link, self.publisher, node_timeout, self.counters,
                             self.standing)
        self.publisher.keep_alive = self.leases.keep_alive
        self.routing = Routing(self.link, self.publisher, self.leases)
        self.reader = Reader(self.link, self.roster, self.routing, self.publisher.stopping)
        #: Room state across nodes (roomstates.py): the hub's room keeper in cluster mode.
        self.room_states = RoomStates(self.link, self.publisher)
        self.reader.handlers["state"] = self.room_states.receive
        self.reader.handlers["away"] = self._away
        self._threads: list[threading.Thread] = []

    # what the service, status and metrics read
    node = property(lambda self: self.link.node,
                    lambda self, value: setattr(self.link, "node", value))
    address = property(lambda self: self.leases.address,
                       lambda self, value: setattr(self.leases, "address", value))
    link_up = property(lambda self: self.link.up)
    live_nodes = property(lambda self: self.leases.live_nodes)
    started_at = property(lambda self: self.link.started_at)
    url = property(lambda self: self.link.shown_url)  # never the password
    rejected = property(lambda self: self.link.rejected.total)

    # -- lifecycle (the service) --------------------------------------------------------

    def connect(self) -> None:
        """Reach Redis and read the cluster's state; raises ClusterStartError."""
        import redis

        link = self.link
        try:
            link.redis = _connect(link.url)
            link.redis.ping()
        except redis.AuthenticationError as exc:  # a ConnectionError, but Redis was reached
            raise ClusterStartError(f"Redis at {link.shown_url} refused chatd: "
                                    f"{scrub(str(exc), link.url)}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise ClusterStartError(f"cannot reach Redis at {link.shown_url}: "
                                    f"{scrub(str(exc), link.url)}") from None
        except (redis.RedisError, ValueError) as exc:  # reached, but refused: NOAUTH, WRONGPASS
            raise ClusterStartError(f"Redis at {link.shown_url} refused chatd: "
                                    f"{scrub(str(exc), link.url)}") from None
        try:
            link.scripts = {name: link.redis.register_script(source) for name, source in
                            (("release", RELEASE), ("replace", REPLACE), ("reap", REAP))}
            self._repair_types()
            # what a previous run under our name left (killed before it could say goodbye)
            self.leases.reap(link.node)
            self.leases.renew()
            # before the snapshot: the reader starts after our hello, so a join's history read
            # at launch (before the reader runs) does not wait for it to pass our own entry
            self.leases.announce_stream()
            self._load_snapshot()
        except (redis.RedisError, OSError) as exc:
            raise ClusterStartError(f"Redis at {link.shown_url} failed while chatd joined: "
                                    f"{scrub(str(exc), link.url)}") from None

    def _repair_types(self) -> None:
        """A shared key of the wrong type (keys.TYPES) would fail every command on it: it is
        deleted, with a warning, before anything reads it."""
        redis = self.link.redis
        with redis.pipeline(transaction=False) as pipe:
            for key in TYPES:
                pipe.type(key)
            found = pipe.execute()
        for (key, expected), kind in zip(TYPES.items(), found):
            if kind not in (b"none", expected.encode()):
                self.link.rejected("key", f"{key} is a {text(kind)}, not a {expected}")
                redis.delete(key)

    def _load_snapshot(self) -> None:
        """The other nodes' members and where each stream stood then (the shared one and
        each known node's own), in one transaction; read again if a node joined between the
        names and the transaction. A record that fails its check is skipped (one warning)."""
        link = self.link
        nodes: set[str] = set()
        for _ in range(SNAPSHOT_TRIES):
            with link.redis.pipeline(transaction=True) as pipe:
                streams = [STREAM, *(node_stream(n) for n in sorted(nodes))]
                for stream in streams:
                    pipe.xrevrange(stream, count=1)
                pipe.hgetall(MEMBERS)
                pipe.smembers(NODES)
                *lasts, members, named = pipe.execute()
            now = self._node_names(named)
            if now <= nodes:
                break
            nodes |= now
        self.reader.start_at({stream.encode(): last[0][0] if last else b"0-0"
                              for stream, last in zip(streams, lasts)})
        for key, value in members.items():
            try:
                owner = text(key)
                node, _ = link.validator.owner(owner)
                if node != link.node:
                    member = link.validator.member(
                        link.seal.open_hidden(f"{MEMBERS}/{owner}", value))
                    if member.rooms:
                        self.roster.add(member.nick, member.rooms, node, member.away)
            except Rejected as exc:
                link.rejected("member", str(exc))

    def _node_names(self, named) -> set[str]:
        """The other nodes of ``chatd:nodes`` whose names pass the check (the rest: leases.py
        drops them at its next renewal), at most what a reader follows."""
        found = set()
        for raw in named:
            try:
                node = node_name(text(raw))
            except Rejected:
                continue
            if node != self.link.node and len(found) < MAX_STREAMS - 1:
                found.add(node)
        return found

    def read_history(self, room_key: str, count: int) -> tuple[list, dict | None]:
        """The room's newest ``count`` lines in Redis and where each stream this node reads
        stood then (one transaction: every line of an entry up to those positions is in the
        list, none after them);
        ([], None) if Redis cannot be asked now (history.py then keeps what arrives). An
        element holds one batch's lines for the room (publisher.py), so the newest ``count``
        elements hold at least ``count`` lines."""
        link = self.link
        key = HISTORY + room_key
        if not link.up:  # a join must not wait for a connect timeout
            return [], None
        streams = self.reader.streams()
        try:
            with link.redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, -count, -1)
                for stream in streams:
                    pipe.xrevrange(stream, count=1)
                values, *lasts = pipe.execute()
        except Exception as exc:  # the redis client's errors, WRONGTYPE included
            log.warning("history_read_failed", room=room_key, error=scrub(str(exc), link.url))
            return [], None
        entries = [e for value in values for e in history_entries(link, room_key, value)]
        at = {stream: position(last[0][0]) if last else (0, 0)
              for stream, last in zip(streams, lasts)}
        # Lines up to `at` that the reader has not handed on yet would reach the joiner live
        # after this replay; once it has, they are in the tail's pending list, sorted out by
        # position (history.py). Bounded: a reader cut off from Redis does not hold a join.
        if not self.reader.caught_up(at, CATCH_UP_SECONDS):  # (lines may come twice)
            log.warning("history_catch_up_slow", room=room_key, seconds=CATCH_UP_SECONDS)
        return entries[-count:], at

    def _away(self, writer: str, item: list) -> None:
        """``["away", NICK, TEXT or null]``, or ``[..., ROOM]``: it joined ROOM while away
        (the reader thread, after that room's JOIN)."""
        if len(item) not in (3, 4):
            raise Rejected("not an away line")
        text = item[2] if item[2] is None else self.link.validator.away(item[2])
        nick = checked_name(item[1])
        self.roster.set_away(nick, text, writer)
        rooms = [checked_name(item[3])] if len(item) == 4 else self.roster.rooms_of(nick, writer)
        self.reader.hub.away_changed(nick, text, rooms)

    def start(self, hub) -> None:
        self.reader.hub = self.leases.hub = self.room_states.hub = hub
        for target, name in ((self.publisher.run, "cluster-publish"),
                             (self.reader.run, "cluster-read")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("cluster_joined", node=self.node, url=self.url, members=len(self.roster))

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is still queued (bounded by ``timeout``), then end both threads."""
        self.publisher.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)
        self.routing.stop()
        if self.link.redis is not None:
            self.link.redis.close()

    # -- the hub's side (see bus.py for the rules) ------------------------------------

    def claim(self, nick: str, client) -> bool:
        link = self.link
        if not link.up:  # fail at once, not after a socket timeout per attempt
            raise ClusterUnavailable("the link to Redis is down")
        key, owner = fold(nick), link.owner(client.id)
        claim = link.seal.seal(f"{NICKS}/{key}", owner)
        try:
            if link.redis.hsetnx(NICKS, key, claim):
                return True
            held = link.redis.hget(NICKS, key)
            if held is None or held == claim.encode():
                return held is not None or bool(link.redis.hsetnx(NICKS, key, claim))
            try:
                link.validator.owner(link.seal.open(f"{NICKS}/{key}", held))
                return False  # another node's client has it
            except Rejected as exc:  # written without the secret: not a claim
                link.rejected("nick", str(exc), nick=nick)
                return bool(link.scripts["replace"](keys=[NICKS], args=[key, held, claim]))
        except Exception as exc:
            raise ClusterUnavailable(str(exc)) from None

    def release(self, nick: str, client) -> None:
        self.counters.release(nick, self.link.owner(client.id))

    def reclaim(self, nick: str) -> bool:
        return self.routing.reclaim(nick)

    def guest_number(self) -> int | None:
        if not self.link.up:
            raise ClusterUnavailable("the link to Redis is down")
        try:
            return self.counters.guest_number()
        except Exception as exc:
            raise ClusterUnavailable(str(exc)) from None

    def publish(self, room: str, event, stamp: float | None = None) -> None:
        encoded = wire.dumps(event)
        keep = None
        if self.history_lines and event.__class__ in KINDS:  # the stream's encoding, reused
            stamp = time.time() if stamp is None else stamp
            keep = (fold(room), f"{stamp:.6f} {room} {encoded}", stamp)
        self.publisher.line(room_line("r", room, encoded), keep)

    def send_private(self, nick: str, event) -> None:
        """Encrypted (codec.Seal.hide): who reads Redis reads neither the text nor to whom."""
        line = room_line("to", fold(nick), wire.dumps(event))
        hidden = self.link.seal.hide(f"{STREAM}/{self.link.node}", line)
        self.publisher.line(f'["hidden","{hidden}"]')

    def publish_all(self, event) -> None:
        self.publisher.line('["all",' + wire.dumps(event)[1:])

    def member(self, client) -> None:
        owner = self.link.owner(client.id)
        room = client.room.name if client.room is not None else None
        record = member_record(client.nick, room, client.peer, client.connected_at,
                               tuple(r.name for r in client.rooms), client.account, client.away,
                               (client.username, client.realname))
        self.publisher.write(("member", (owner, record)))  # sealed by the publisher

    def away(self, nick: str, text: str | None, room: str | None = None) -> None:
        """``/away`` or ``/back``: told the other nodes' rosters (their ``/who``) and the
        members of its rooms there who follow it; ``room``: it joined that room while away,
        and only that room's members are told."""
        self.publisher.line(wire.compact(["away", nick, text] if room is None
                                         else ["away", nick, text, room]))

    def remote_away(self, nick: str) -> str | None:
        return self.roster.away(nick)

    def gone(self, client) -> None:
        self.publisher.write(("hdel", (MEMBERS, self.link.owner(client.id))))
        if client.nick:
            self.publisher.write(("whowas", departures.of(self.link, client)))

    def whowas(self, nick: str) -> list[tuple[str, str, str, float]]:
        return departures.read(self.link, nick)

    def remote_members(self, room: str) -> list[str]:
        return self.roster.members(room)

    def remote_rooms(self) -> dict[str, tuple[str, int]]:
        return self.roster.rooms()

    def remote_nick(self, nick: str) -> str | None:
        return self.roster.nick(nick)

    # -- history (store/history.py: RedisStore) --------------------------------------------

    def purge_history(self, room_key: str) -> None:
        """Delete the room's history in Redis and have every other node drop its tail."""
        self.publisher.write(("delete", (HISTORY + room_key,)))
        self.routing.tell_all("purge", {"room": room_key})

    # -- the admin side (routing.py) ----------------------------------------------------

    def nodes(self) -> list[dict]:
        return self.routing.nodes()

    def remote_clients(self, room: str | None = None) -> list[dict]:
        return self.routing.remote_clients(room)

    def locate(self, target):
        return self.routing.locate(target)

    def describe(self, nick: str):
        return self.routing.describe(nick)

    def describe_many(self, nicks: list[str]) -> dict:
        return self.routing.describe_many(nicks)

    def route(self, node: str, action: str, client_id: int, args: dict) -> bool | None:
        return self.routing.route(node, action, client_id, args)

    def ban(self, record: dict) -> None:
        self.routing.ban(record)

    def unban(self, address: str) -> None:
        self.routing.unban(address)

    def share_bans(self, records: list[dict]) -> list[dict]:
        return self.routing.share_bans(records)

    def on_command(self, handler) -> None:
        """``handler(action, client_id, args)`` carries out what another node's admin asked;
        it returns whether the client was there (what :meth:`route` waits for)."""
        self.routing.on_command = handler

    def client_ids(self):
        return ClientIds(self.counters)
