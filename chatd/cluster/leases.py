"""Leases: who is alive, reaping the dead, and coming back after Redis forgot us.

Each node renews ``chatd:node:NAME`` (a sealed record that expires after ``node_timeout``)
every third of it, on the publisher thread. A node whose lease is gone is *lost*: the first
node to notice takes ``reaping:NAME`` (SET NX) and removes its members and nick claims and
announces a ``(node lost)`` departure for each, in one script (keys.REAP) whose entry this node
seals beforehand, so every node announces each one exactly once. A lease, a member record or a
node name that fails its check is skipped with one warning: without the secret nobody can make
a node look alive, nor announce departures.

If Redis forgot this node (restart without persistence, or it was reaped while cut off), its
members and nick claims are written back (:meth:`Leases.reassert`). Publisher thread only,
but :meth:`alive`, which the reader asks before it obeys a routed admin action.
"""

from __future__ import annotations

import functools
import json
import time

import structlog

from chatd.cluster import departures, wire
from chatd.cluster.checks import node_name
from chatd.cluster.codec import Rejected, text
from chatd.cluster.keys import (
    LEASE,
    MEMBERS,
    NICKS,
    NODE_STREAM_TTL_MS,
    NODES,
    REAPING,
    STREAM,
    STREAM_LENGTH,
    WHOWAS,
    node_stream,
)
from chatd.core import events as ev
from chatd.core import once
from chatd.text import fold

log = structlog.get_logger("chatd.cluster")


def member_record(nick: str, room: str | None, peer: str, connected_at: float,
                  rooms: tuple = (), account: str | None = None, away: str | None = None,
                  names: tuple[str, str] = ("", "")) -> str:
    """A ``members`` hash value (sealed by the caller): what other nodes show of a client.
    Four fields (the format of chatd before rooms and accounts, which a node of that version
    reads) unless the client is in more rooms than its current one or logged in; then six;
    seven while it is away (``/whois``, ``/msg``'s away answer: SPEC §13); nine for an IRC
    client, whose ``names`` (the user name and real name USER gave) WHOIS shows."""
    record = [nick, room, peer, round(connected_at, 3)]
    named = names != ("", "")
    if named or away is not None or account is not None or len(rooms) > 1 \
            or (rooms and rooms[0] != room):
        record += [list(rooms), account]
    if away is not None or named:
        record.append(away)
    if named:
        record += names
    return json.dumps(record)


def room_line(kind: str, target: str, encoded_event: str) -> str:
    """``[KIND, TARGET, *EVENT]`` as JSON text, from the event's own encoding (wire.dumps):
    the event is encoded once, and reused by the history record."""
    return _line_head(kind, target) + encoded_event[1:]


@functools.lru_cache(maxsize=4096)
def _line_head(kind: str, target: str) -> str:
    """``[KIND,TARGET,`` (a few rooms carry nearly every line: encoded once each)."""
    return f"[{wire.compact(kind)},{wire.compact(target)},"


class Leases:
    def __init__(self, link, publisher, node_timeout: float, counters, standing=None) -> None:
        self.link = link
        self.standing = standing  # standing.py: where our accounts stand, at each renewal
        self.publisher = publisher
        self.node_timeout = node_timeout
        self.counters = counters  # bus.py: guest numbers, repaired if junk
        self.hub = None
        self.address = ""  # HOST:PORT of our chat listener, for `chatctl nodes` (the service)
        #: Live nodes, this one included, as last seen at a renewal: read by metrics and
        #: status (an int read is atomic), so a scrape never asks Redis.
        self.live_nodes = 1
        self._live: frozenset[str] = frozenset()  # the others' names, same moment
        # Redis forgot us and our members are not back yet; and whether the others were told
        # ours were lost meanwhile. Both stay set until a reassert went through whole.
        self._reassert_due = self._was_reaped = False

    # -- renewal and reaping (publisher thread) ------------------------------------------

    def keep_alive(self) -> None:
        if not self.renew():
            self._reassert_due = True
        if self._reassert_due:
            self.reassert()
        redis, live = self.link.redis, set()
        for raw in redis.smembers(NODES):
            try:
                node = node_name(text(raw))
            except Rejected as exc:
                self.link.rejected("node", str(exc))
                redis.srem(NODES, raw)
                continue
            if node == self.link.node:
                continue
            state = self.lease(node)
            if state == "live":
                live.add(node)
            elif state == "gone" and redis.set(REAPING + node, self.link.node, nx=True,
                                               px=int(self.reaped_memory() * 1000)):
                log.warning("node_lost", node=node, members=self.reap(node))
        self._live = frozenset(live)
        self.live_nodes = 1 + len(live)
        if self.standing is not None and self.hub is not None:
            self.standing.record(self.hub)

    def lease(self, node: str) -> str:
        """"live", "gone" or "junk" (a value that fails its check: neither trusted nor reaped)."""
        value = self.link.redis.get(LEASE + node)
        if value is None:
            return "gone"
        try:
            self.link.validator.lease(self.link.seal.open(LEASE + node, value))
        except Rejected as exc:
            self.link.rejected("lease", str(exc), node=node)
            return "junk"
        return "live"

    def alive(self, node: str) -> bool:
        """Whether ``node`` holds a lease now (any thread: the reader, before obeying it)."""
        return node in self._live or self.lease(node) == "live"

    def reaped_memory(self) -> float:
        """How long the cluster remembers that it reaped a node: long enough for a node cut
        off for a while (docs/cluster.md: 60 s) to learn of it when it is back."""
        return max(120.0, 6 * self.node_timeout)

    def renew(self) -> bool:
        """Set our lease again; False if it was gone (Redis restarted, or we were reaped)."""
        link = self.link
        info = json.dumps({"since": link.started_at, "address": self.address,
                           "clients": len(self.hub.clients()) if self.hub else 0})
        key = LEASE + link.node
        with link.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, link.seal.seal(key, info), px=int(self.node_timeout * 1000), get=True)
            pipe.sadd(NODES, link.node)
            pipe.pexpire(node_stream(link.node), NODE_STREAM_TTL_MS)  # (a node gone for good)
            previous, *_ = pipe.execute()
        self.publisher.renew_at = time.monotonic() + self.node_timeout / 3
        return previous is not None

    def reap(self, node: str) -> int:
        """Announce ``node``'s members as lost and forget them, atomically (keys.REAP); then
        file them as departures (run 0: nobody's census has them) for WHOWAS."""
        link, lines, triples, gone = self.link, [], [], []
        prefix = f"{node}|".encode()
        for key, value in link.redis.hgetall(MEMBERS).items():
            if not key.startswith(prefix):
                continue
            field = text(key)
            try:
                member = link.validator.member(link.seal.open_hidden(f"{MEMBERS}/{field}", value))
            except Rejected as exc:
                link.rejected("member", str(exc), node=node)
                triples += [field, "", ""]
                continue
            nick = member.nick
            triples += [field, fold(nick), link.seal.seal(f"{NICKS}/{fold(nick)}", field)]
            gone.append(departures.element(link.seal, *departures.departure(
                node, 0, nick, (member.username, member.realname), time.time())))
            lines += [room_line("r", room, wire.dumps(ev.Quit(nick, room, "node lost", before)))
                      for room, before in zip(member.rooms, once.befores(member.rooms))]
        entry = link.seal.entry(link.node, link.sequence.next(), "[" + ",".join(lines) + "]",
                                lost=node) if lines else None
        fields = [entry["h"], entry["c"]] if entry else ["", ""]
        reaped = int(link.scripts["reap"](keys=[MEMBERS, NICKS, STREAM, NODES],
                                          args=[node, STREAM_LENGTH, *fields, *triples]))
        if gone:
            with link.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(WHOWAS, *gone)
                pipe.ltrim(WHOWAS, 0, departures.MAX_DEPARTURES - 1)
                pipe.execute()
        return reaped

    # -- coming back (publisher thread) --------------------------------------------------

    def reassert(self) -> None:
        """Our members and nicks back into Redis after it lost them. If the others reaped us
        meanwhile (they told their members ours were lost), announce ours as joining again;
        after a mere Redis restart they still know them, so nothing is said. A nick that
        someone elsewhere took meanwhile stays theirs: ours gets a guest nick (:meth:`revoke`)."""
        if self.hub is None:  # at start: nothing of ours to put back
            self._reassert_due = False
            return
        link = self.link
        if link.redis.getdel(REAPING + link.node) is not None:
            self._was_reaped = True
        rows = [row for row in self.hub.snapshot() if row.nick and row.rooms]
        kept, lost = self._reclaim_nicks(rows)
        for row in lost:
            self.revoke(row[0], row[1])
        self.announce_stream()  # (a node that started meanwhile does not read ours yet)
        if self._was_reaped and kept:
            lines = [room_line("r", room, wire.dumps(ev.Joined(row.nick, room, row.account)))
                     for row in kept for room in row.rooms]
            link.redis.xadd(STREAM, link.entry("[" + ",".join(lines) + "]"),
                            maxlen=STREAM_LENGTH, approximate=True)
        log.warning("cluster_reasserted", node=link.node, members=len(rows),
                    reaped=self._was_reaped, renamed=len(lost))
        self._reassert_due = self._was_reaped = False

    def announce_stream(self) -> None:
        """Tell every node, on the shared stream, where our own stream goes on from
        (``["streams", ID]``: its last entry now): one that does not read it yet starts
        there (reader.py). Before any batch of ours: at start, and after Redis forgot us."""
        link = self.link
        last = link.redis.xrevrange(node_stream(link.node), count=1)
        start = text(last[0][0]) if last else "0-0"
        link.redis.xadd(STREAM, link.entry(json.dumps([["streams", start]])),
                        maxlen=STREAM_LENGTH, approximate=True)

    def _reclaim_nicks(self, rows: list) -> tuple[list, list]:
        """Our member records and nick claims back, in one transaction; -> (rows whose nick is
        still ours, rows whose nick another node's client holds now)."""
        link = self.link
        claims = []
        with link.redis.pipeline(transaction=True) as pipe:
            for row in rows:
                owner, nick = link.owner(row.id), row.nick
                claim = link.seal.seal(f"{NICKS}/{fold(nick)}", owner)
                claims.append(claim.encode())
                record = member_record(nick, row.room, row.peer, row.connected_at, row.rooms,
                                       row.account, names=row.names)
                pipe.hset(MEMBERS, owner, link.seal.seal_hidden(f"{MEMBERS}/{owner}", record))
                pipe.hsetnx(NICKS, fold(nick), claim)
                pipe.hget(NICKS, fold(nick))
            replies = pipe.execute()
        kept, lost = [], []
        for row, claim, holder in zip(rows, claims, replies[2::3]):
            (kept if holder == claim else lost).append(row)
        return kept, lost

    def revoke(self, client_id: int, nick: str) -> None:
        """Give our client ``nick`` lost to another node a fresh guest nick, claimed first."""
        link = self.link
        owner = link.owner(client_id)
        while True:
            new = f"guest-{self.counters.guest_number()}"
            claim = link.seal.seal(f"{NICKS}/{fold(new)}", owner)
            if self.hub.find(new) is None and link.redis.hsetnx(NICKS, fold(new), claim):
                break
        if self.hub.revoke_nick(client_id, nick, new, reaped=self._was_reaped):
            log.warning("cluster_nick_revoked", node=link.node, client_id=client_id, nick=nick,
                        new_nick=new)
        else:  # it left or took another nick meanwhile
            self.counters.release(new, owner)
