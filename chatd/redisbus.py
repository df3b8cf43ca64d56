"""The cluster bus on Redis (docs/cluster.md): one stream of room lines, hashes of who is where.

Keys (all under ``chatd:``):

- ``events``: a Stream. Every node appends what its members do in rooms and reads what the
  others append (``XREAD`` from the last id it saw). An entry is ``o`` (the origin node) and
  ``c``, a batch: the JSON list of the lines the publisher had queued, in order (one ``XADD``
  per batch, trimmed to about :data:`STREAM_LENGTH` entries). One stream gives every reader
  the same total order, so each sender's lines arrive in the order sent, once: ids only grow,
  and a reader that reconnects asks for what came after the last id it handled. A line is a
  JSON list: ``["r", ROOM, *EVENT]`` (EVENT as wire.py encodes it: ``"Said", "bob", "hi"``);
  ``["to", FOLDED NICK, *EVENT]`` for a private line; ``["all", *EVENT]`` for an operator's
  line to every room; ``["cmd", NODE, ACTION, CLIENT ID, ARGS]`` for an admin action that node
  (``*``: every node) carries out: ban, unban, purge; ``["cmd", NODE, ACTION, CLIENT ID, ARGS,
  ASKER, ASK ID]`` for one the asking node waits for (kick, mute, unmute of one client), which
  NODE answers with ``["re", ASKER, ASK ID, DONE]`` (DONE false: the client was not there);
  ``["gather", ACTION, ARGS, KEY]``: every other node answers (``rows``: its clients, with
  the counters only it has) by pushing ``{"node", "result"}`` to the list KEY
  (``answers:NODE:ASK ID``, expiring), which the asking node pops: answers that may be large
  stay out of the stream every node reads. Each line is encoded once, when queued, and a
  batch is those texts joined; a reader decodes a batch once. (``b``, the format before: a
  JSON list of objects whose events were JSON texts again, is still read, for a node of the
  version before during a rolling restart.)
- ``members``: hash ``node|client id`` -> ``[nick, room, peer, connected_at]``: every node's clients, kept in the
  same transaction (MULTI) as the stream entry that tells of the change, so a node that
  starts reads a snapshot and the stream id it belongs to in one transaction.
- ``nicks``: hash folded nick -> ``node|client id``: the cluster-wide claim (``HSETNX``).
- ``guests``: the counter behind guest nicks (``INCR``); ``id-blocks``: each node takes a block
  of ID_BLOCK client ids at a time (``INCR``), so client ids are unique cluster-wide.
- ``bans``: hash network -> ban record (bans.py): the cluster's bans, loaded at start; a new
  ban or unban also goes down the stream as a ``cmd`` for ``node`` ``*`` (every node).
- ``history:ROOM`` (folded room name): a list of ``TS ROOM EVENT`` (the event as in the stream), the
  room's history (history.py), trimmed to ``history_lines``; ``history-rooms``: the set of
  those rooms. A node appends its own lines in the same transaction as the stream entry that
  carries them, so every line is in the history exactly when the other nodes can read it:
  a node that starts reads the lists and the stream id they belong to in one transaction
  (:data:`_HISTORY`), and its tails and its reader then meet exactly.
- ``nodes`` (a set of node names) and ``node:NAME``: a node's lease, a key that expires after
  ``node_timeout`` unless the node renews it (every third of that). A node whose lease is gone
  is *lost*: the first node to notice takes ``reaping:NAME`` (SET NX) and runs :data:`_REAP`,
  one script that removes the lost node's members and claims and appends a ``(node lost)``
  departure for each, so every node announces each one exactly once.

Threads: a *publisher* takes what the hub queued (:meth:`publish`, :meth:`member`,
:meth:`gone`, :meth:`send_private`: list appends under ``_lock``, never I/O) and sends it in
one pipelined transaction per batch, so the Redis work per message is O(1) per node, never
per recipient; a *reader* blocks in ``XREAD`` and hands other nodes' lines to the hub. Claims
and guest numbers are asked for on the calling session thread (outside the hub lock).

``_lock`` guards the outgoing queue (and when its oldest item came), ``_remote`` (folded nick
-> (nick, room, node): the other nodes' members as last heard) and ``_answers`` (the routed
admin actions waiting for their answer). It is taken after the hub lock, never before.
Admin threads that wait for other nodes (``route``, ``_gather``) wait on a Future or in a
BLPOP, never while holding it; a ``gather`` is answered on a short thread of its own, so the
reader never builds a large answer between two batches of chat lines.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as NoAnswer

import structlog

from chatd import events as ev
from chatd import wire
from chatd.bus import ClusterUnavailable
from chatd.history import KINDS, Entry
from chatd.protocol import fold

log = structlog.get_logger("chatd.cluster")

PREFIX = "chatd:"
STREAM, MEMBERS, NICKS, GUESTS, NODES, ID_BLOCKS, BANS, HISTORY_ROOMS = (
    PREFIX + k for k in ("events", "members", "nicks", "guests", "nodes", "id-blocks", "bans",
                         "history-rooms"))
HISTORY = PREFIX + "history:"
ANSWERS = PREFIX + "answers:"
ID_BLOCK = 1_000_000
#: Entries kept in the stream: what a node that lost its link can still catch up on. At 1,000
#: lines/s over the cluster that is 100 s, more than the 60 s outage docs/cluster.md promises.
STREAM_LENGTH = 100_000
READ_BLOCK_MS = 1000
READ_COUNT = 1000
SOCKET_TIMEOUT = 5.0
RETRY_SECONDS = 0.5
#: How long an admin action routed to another node waits for that node's answer: two stream
#: hops, normally a few milliseconds.
ANSWER_SECONDS = 3.0
#: How long the publisher lets a batch gather after its first line before sending it (as
#: Kafka's linger.ms): each batch is one transaction here, one XADD in Redis, one wake-up of
#: every other node's reader and one flush there, so fewer, larger batches cost every process
#: less per line. Measured at 2,500 lines/s over two nodes (bench/README.md, cluster): nodes
#: 57/48 % -> 48/41 % of a core, Redis 17 % -> 10 %, 7.6 -> 3.6 Redis commands per line, for
#: cross-node latency p50 0.8 -> 1.5 ms, p99 2.3 -> 2.9 ms; at full speed the freed CPU makes
#: deliveries/s rise (2 ms gathered more still, but cost more latency than it saved CPU).
PUBLISH_LINGER = 0.001
#: How long ``list`` waits for the other nodes' rows; a node that has not answered by then is
#: shown from its member records (no counters). Answers left unread expire after ANSWER_TTL.
GATHER_SECONDS = 2.0
ANSWER_TTL = 30

#: Release a nick only if we still hold it (another node may have claimed it since).
_RELEASE = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end
return 0
"""


#: Every room's history, newest ARGV[1] entries: {room key, {entry, ...}, ...} (atomic).
_HISTORY = """
local out = {}
for _, room in ipairs(redis.call('smembers', KEYS[1])) do
  out[#out + 1] = room
  out[#out + 1] = redis.call('lrange', ARGV[2] .. room, -tonumber(ARGV[1]), -1)
end
return out
"""


#: Forget every member of node ARGV[1] and announce its departure from its room (atomic).
#: Nicks are ASCII (docs/protocol.md §1), so Lua's lower() is the same fold as Python's.
_REAP = """
local prefix = ARGV[1] .. '|'
local entries = redis.call('hgetall', KEYS[1])
local gone = 0
for i = 1, #entries, 2 do
  local key, value = entries[i], entries[i + 1]
  if string.sub(key, 1, #prefix) == prefix then
    local member = cjson.decode(value)
    local nick, room = member[1], member[2]
    redis.call('hdel', KEYS[1], key)
    if redis.call('hget', KEYS[2], string.lower(nick)) == key then
      redis.call('hdel', KEYS[2], string.lower(nick))
    end
    if type(room) == 'string' then
      redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'o', ARGV[2],
                 'c', cjson.encode({{'r', room, 'Left', nick, room, 'node lost'}}))
    end
    gone = gone + 1
  end
end
redis.call('srem', KEYS[4], ARGV[1])
return gone
"""


_CHAT = (ev.Said, ev.Acted, ev.Announcement)


class ClusterStartError(Exception):
    """Redis cannot be reached at start: one line naming the URL (chatd exits 1)."""


def _connect(url: str):
    import redis  # only cluster mode needs the client library

    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=SOCKET_TIMEOUT, decode_responses=True)


class RedisBus:
    def __init__(self, url: str, node: str, node_timeout: float = 10.0,
                 history_lines: int = 0) -> None:
        self.url = url
        self.history_lines = history_lines  # 0: no history is written
        self.node = node
        self.node_timeout = node_timeout
        self._renew_at = 0.0  # monotonic time of the next lease renewal (publisher thread)
        # publisher thread: Redis forgot us (restart, or we were reaped) and our members and
        # nicks are not back yet; and whether the others were told ours were lost meanwhile.
        # Both stay set until a reassert has gone through whole, so a failed one is retried.
        self._reassert_due = self._was_reaped = False
        # the origin of the departures the others announced for us when they reaped us: our
        # reader skips them, since our clients are still here (docs/cluster.md)
        self._lost_origin = f"lost:{node}"
        self._stop_by = 0.0  # stop(): the publisher gives up sending at this time
        self.started_at = time.time()
        self.link_up = True  # written by _link() under _lock; read by status and metrics
        #: Live nodes, this one included, as the publisher thread last saw them at a lease
        #: renewal (every node_timeout / 3); read by the metrics (an int read is atomic), so
        #: a scrape never asks Redis.
        self.live_nodes = 1
        self.address = ""  # HOST:PORT of our chat listener, for `chatctl nodes` (the service)
        self._on_command = None
        self._redis = None
        self._lock = threading.Lock()
        #: ask id -> Future of the answer (route()): set by the reader, under _lock
        self._answers: dict[int, Future] = {}
        self._asks = itertools.count(1)
        # (pipeline method, args): ("xadd", (fields, history record or None)), ("hset", (k, f, v))
        self._outgoing: list = []
        self._first_at = 0.0  # when the oldest item in _outgoing was queued (under _lock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._remote: dict[str, tuple[str, str, str]] = {}
        self._last_id = "0-0"
        self._hub = None
        self._threads: list[threading.Thread] = []
        self._history: dict[str, list] = {}  # room key -> entries read at start; history.py takes each once
        self._release = self._reap = self._read_history = None  # Lua scripts (connect())

    # -- lifecycle (the service) --------------------------------------------------------------

    def connect(self) -> None:
        """Reach Redis and read the cluster's state; raises ClusterStartError."""
        import redis

        try:
            self._redis = _connect(self.url)
            self._redis.ping()
            self._release = self._redis.register_script(_RELEASE)
            self._reap = self._redis.register_script(_REAP)
            self._read_history = self._redis.register_script(_HISTORY)
            # what a previous run under our name left (killed before it could say goodbye)
            self._reap_node(self.node)
            self._renew_lease()
            self._load_snapshot()
        except (redis.RedisError, OSError, ValueError) as exc:
            raise ClusterStartError(f"cannot reach Redis at {self.url}: {exc}") from None

    def _load_snapshot(self) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrevrange(STREAM, count=1)
            pipe.hgetall(MEMBERS)
            if self.history_lines:
                self._read_history(keys=[HISTORY_ROOMS], args=[self.history_lines, HISTORY],
                                   client=pipe)
            last, members, *history = pipe.execute()
        self._last_id = last[0][0] if last else "0-0"
        rows = history[0] if history else []
        for room_key, entries in zip(rows[::2], rows[1::2]):
            self._history[room_key] = [entry for entry in map(_history_entry, entries) if entry]
        for key, value in members.items():
            node = key.rpartition("|")[0]
            if node != self.node:
                nick, room = json.loads(value)[:2]
                self._remote[fold(nick)] = (nick, room, node)

    def start(self, hub) -> None:
        self._hub = hub
        for target, name in ((self._publish_loop, "cluster-publish"), (self._read_loop, "cluster-read")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("cluster_joined", node=self.node, url=self.url, members=len(self._remote))

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is still queued (bounded by ``timeout``), then end both threads."""
        self._stop_by = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._redis is not None:
            self._redis.close()

    # -- the hub's side (see bus.py for the rules) --------------------------------------------

    def claim(self, nick: str, client) -> bool:
        if not self.link_up:  # fail at once, not after a socket timeout per attempt
            raise ClusterUnavailable("the link to Redis is down")
        owner = self._owner(client)
        try:
            if self._redis.hsetnx(NICKS, fold(nick), owner):
                return True
            return self._redis.hget(NICKS, fold(nick)) == owner
        except Exception as exc:
            raise ClusterUnavailable(str(exc)) from None

    def release(self, nick: str, client) -> None:
        try:
            self._release(keys=[NICKS], args=[fold(nick), self._owner(client)])
        except Exception as exc:
            log.warning("cluster_release_failed", nick=nick, error=str(exc))

    def guest_number(self) -> int | None:
        if not self.link_up:
            raise ClusterUnavailable("the link to Redis is down")
        try:
            return int(self._redis.incr(GUESTS))
        except Exception as exc:
            raise ClusterUnavailable(str(exc)) from None

    def publish(self, room: str, event) -> None:
        encoded = wire.dumps(event)
        keep = None
        if self.history_lines and event.__class__ in KINDS:  # the stream's encoding, reused
            keep = (fold(room), f"{time.time():.6f} {room} {encoded}")
        self._append(_line("r", room, encoded), keep)

    # -- history (historystore.RedisStore) ------------------------------------------------

    def stored_history(self, room_key: str, count: int) -> list:
        """The room's history as read at start (once: afterwards history.py's tail has it)."""
        with self._lock:
            entries = self._history.pop(room_key, [])
        return entries[-count:] if count else []

    def purge_history(self, room_key: str) -> None:
        """Delete the room's history in Redis and have every other node drop its tail."""
        self._queue(("delete", (HISTORY + room_key,)))
        self._queue(("srem", (HISTORY_ROOMS, room_key)))
        self._tell_all("purge", {"room": room_key})

    def send_private(self, nick: str, event) -> None:
        self._append(_line("to", fold(nick), wire.dumps(event)))

    def publish_all(self, event) -> None:
        self._append('["all",' + wire.dumps(event)[1:])

    def member(self, client) -> None:
        room = client.room.name if client.room is not None else None
        record = _member_record(client.nick, room, client.peer, client.connected_at)
        self._queue(("hset", (MEMBERS, self._owner(client), record)))

    def gone(self, client) -> None:
        self._queue(("hdel", (MEMBERS, self._owner(client))))

    def remote_members(self, room: str) -> list[str]:
        key = fold(room)
        with self._lock:
            return [nick for nick, where, _ in self._remote.values() if fold(where) == key]

    def remote_rooms(self) -> dict[str, tuple[str, int]]:
        counts: dict[str, tuple[str, int]] = {}
        with self._lock:
            for _, room, _ in self._remote.values():
                name, count = counts.get(fold(room), (room, 0))
                counts[fold(room)] = (name, count + 1)
        return counts

    def remote_nick(self, nick: str) -> str | None:
        with self._lock:
            entry = self._remote.get(fold(nick))
        return entry[0] if entry else None

    # -- the admin side ---------------------------------------------------------------------------

    def nodes(self) -> list[dict]:
        """The other live nodes: name, address, clients, uptime, seconds since last renewal."""
        found = []
        for node in sorted(self._redis.smembers(NODES)):
            key = PREFIX + "node:" + node
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, ttl = pipe.execute()
            if node == self.node or value is None:
                continue
            info = json.loads(value)
            found.append({"node": node, "address": info.get("address", ""),
                          "clients": info.get("clients"),
                          "uptime": round(time.time() - info.get("since", time.time()), 3),
                          "last_seen": round(max(0.0, self.node_timeout - ttl / 1000), 3)})
        return found

    def remote_clients(self, room: str | None = None) -> list[dict]:
        """Other nodes' clients as each tells (``rows``, gathered): with their counters. A
        node that does not answer in GATHER_SECONDS is shown from its member records, without
        the counters. Raises ClusterUnavailable when Redis cannot be asked."""
        try:
            others = {info["node"] for info in self.nodes()}
            answers = self._gather("rows", {"room": room}, others) if others else {}
            recorded = self._recorded_clients(room, others - set(answers))
        except ClusterUnavailable:
            raise
        except Exception as exc:  # the redis client's errors
            raise ClusterUnavailable(str(exc)) from None
        rows = [row for node in sorted(answers) if node in others
                and isinstance(answers[node], list) for row in answers[node]
                if isinstance(row, dict)]
        return sorted(rows + recorded, key=lambda row: row.get("id") or 0)

    def _recorded_clients(self, room: str | None, nodes: set) -> list[dict]:
        """The member records of ``nodes``' clients (no counters: those are the owner's)."""
        if not nodes:
            return []
        rows = []
        for key, value in self._redis.hgetall(MEMBERS).items():
            node, _, client_id = key.rpartition("|")
            nick, where, peer, connected_at = (json.loads(value) + [None, None])[:4]
            if node not in nodes or (room is not None and fold(where or "") != fold(room.lstrip("#"))):
                continue
            rows.append({"id": int(client_id), "nick": nick, "peer": peer, "room": where,
                         "connected_at": connected_at, "node": node})
        return rows

    def _gather(self, action: str, args: dict, nodes: set) -> dict:
        """Ask every other node for ``action``'s result; -> {node: result} of those that
        answered within GATHER_SECONDS (on the admin thread that asks: it blocks, bounded)."""
        if not self.link_up:
            raise ClusterUnavailable("the link to Redis is down")
        key = f"{ANSWERS}{self.node}:{next(self._asks)}"
        self._append(wire.compact(["gather", action, args, key]))
        answers: dict = {}
        deadline = time.monotonic() + GATHER_SECONDS
        try:
            while not nodes <= set(answers):
                left = deadline - time.monotonic()
                reply = self._redis.blpop([key], timeout=left) if left > 0.01 else None
                if reply is None:
                    break
                answer = json.loads(reply[1])
                answers[answer["node"]] = answer["result"]
        finally:
            self._redis.delete(key)
        return answers

    def _answer(self, action: str, args: dict, key: str) -> None:
        """Another node's ``gather``, on a thread of its own (the reader goes on with the
        chat): our result pushed to its answer list."""
        try:
            result = self._on_command(action, None, args)
            payload = json.dumps({"node": self.node, "result": result}, default=str)
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, payload)
                pipe.expire(key, ANSWER_TTL)
                pipe.execute()
        except Exception as exc:  # the asker shows our member records instead
            log.warning("cluster_answer_failed", action=action, error=str(exc))

    def locate(self, target):
        """(node, client id, nick) of a client on another node, by id or nick; or None.
        Raises ClusterUnavailable when Redis cannot be asked."""
        try:
            if isinstance(target, int) or str(target).isascii() and str(target).isdigit():
                matches = [k for k, _ in self._redis.hscan_iter(MEMBERS, match=f"*|{int(target)}")]
            else:
                owner = self._redis.hget(NICKS, fold(str(target)))
                matches = [owner] if owner else []
            for owner in matches:
                node, _, client_id = owner.rpartition("|")
                value = self._redis.hget(MEMBERS, owner)
                if node != self.node and value is not None:
                    return node, int(client_id), json.loads(value)[0]
        except Exception as exc:  # the redis client's errors (imported only in cluster mode)
            raise ClusterUnavailable(str(exc)) from None
        return None

    def route(self, node: str, action: str, client_id: int, args: dict) -> bool | None:
        """Have ``node`` carry out ``action`` on its client and wait for its answer: True
        (done), False (the client was not there any more), None (no answer within
        ANSWER_SECONDS: the node may be gone, or just slow: the action may still happen).
        Raises ClusterUnavailable while the link to Redis is down (nothing is queued then)."""
        if not self.link_up:
            raise ClusterUnavailable("the link to Redis is down")
        ask, answer = next(self._asks), Future()  # (count's next() is atomic in CPython)
        with self._lock:
            self._answers[ask] = answer
        self._append(wire.compact(["cmd", node, action, client_id, args, self.node, ask]))
        try:
            return bool(answer.result(ANSWER_SECONDS))
        except NoAnswer:
            return None
        finally:
            with self._lock:
                self._answers.pop(ask, None)

    def _tell_all(self, action: str, args: dict) -> None:
        """An admin action for every node (this one carries it out itself), unanswered."""
        self._append(wire.compact(["cmd", "*", action, None, args]))

    def ban(self, record: dict) -> None:
        """A ban for every node, now and at their next start (Redis is where bans live)."""
        self._queue(("hset", (BANS, record["address"], json.dumps(record))))
        self._tell_all("ban", record)

    def unban(self, address: str) -> None:
        self._queue(("hdel", (BANS, address)))
        self._tell_all("unban", {"address": address})

    def share_bans(self, records: list[dict]) -> list[dict]:
        """At start: this node's own bans (its state file) join the cluster's, which Redis
        keeps; returns all of them, which is what this node then enforces."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for record in records:
                    pipe.hsetnx(BANS, record["address"], json.dumps(record))
                pipe.hvals(BANS)
                values = pipe.execute()[-1]
            return [json.loads(value) for value in values]
        except Exception as exc:
            raise ClusterStartError(f"cannot read the bans from Redis at {self.url}: {exc}") from None

    def on_command(self, handler) -> None:
        """``handler(action, client_id, args)`` carries out what another node's admin asked;
        it returns whether the client was there (what :meth:`route` waits for)."""
        self._on_command = handler

    def client_ids(self):
        return _ClientIds(self)

    def _owner(self, client) -> str:
        return f"{self.node}|{client.id}"

    def _append(self, line: str, keep: tuple | None = None) -> None:
        """Queue one stream line (JSON text, see the module docstring) and the history record
        that goes with it, if any."""
        self._queue(("xadd", (line, keep)))

    def _queue(self, item: tuple) -> None:
        """Only the first item of a batch wakes the publisher (it takes them all at once)."""
        with self._lock:
            first = not self._outgoing
            if first:
                self._first_at = time.monotonic()
            self._outgoing.append(item)
        if first:
            self._wake.set()

    # -- the publisher thread -----------------------------------------------------------------

    def _publish_loop(self) -> None:
        """Send what is queued, renew the lease; while Redis is away keep everything, in order,
        and try again every RETRY_SECONDS (docs/cluster.md: an outage loses no line)."""
        retry_at = 0.0
        while True:
            now = time.monotonic()
            self._wake.wait(max(0.0, max(retry_at, min(self._renew_at, now + 1)) - now)
                            if not self._stopping.is_set() else RETRY_SECONDS / 5)
            self._wake.clear()
            linger = self._first_at + PUBLISH_LINGER - time.monotonic()
            if linger > 0 and not self._stopping.is_set():
                time.sleep(linger)  # the batch gathers what else comes meanwhile
            now = time.monotonic()
            if self._stopping.is_set() and (not self._outgoing or now >= self._stop_by):
                return
            if now < retry_at:
                continue
            batch = []
            try:
                if now >= self._renew_at:
                    self._keep_alive()
                with self._lock:
                    batch, self._outgoing = self._outgoing, []
                if batch:
                    self._send(batch)
                self._link(True)
            except Exception as exc:
                with self._lock:
                    self._outgoing[:0] = batch  # before whatever was queued meanwhile
                self._link(False, exc)
                retry_at = time.monotonic() + RETRY_SECONDS

    def _send(self, batch: list) -> None:
        """One transaction (MULTI) for the whole batch: it happens entirely or not at all. The
        batch's stream items go as ONE entry (``b``: the list of them, in order), so Redis
        work per line shrinks as load grows: one XADD per batch, not one per line."""
        lines = [args[0] for method, args in batch if method == "xadd"]
        kept = [args[1] for method, args in batch if method == "xadd" and args[1] is not None]
        with self._redis.pipeline(transaction=True) as pipe:
            for method, args in batch:
                if method != "xadd":
                    getattr(pipe, method)(*args)
            by_room: dict[str, list] = {}  # history: with the stream entry that carries it,
            for room_key, record in kept:  # one RPUSH per room per batch, in order
                by_room.setdefault(room_key, []).append(record)
            for room_key, records in by_room.items():
                pipe.rpush(HISTORY + room_key, *records)
                pipe.ltrim(HISTORY + room_key, -self.history_lines, -1)
            if by_room:
                pipe.sadd(HISTORY_ROOMS, *by_room)
            if lines:
                pipe.xadd(STREAM, {"o": self.node, "c": "[" + ",".join(lines) + "]"},
                          maxlen=STREAM_LENGTH, approximate=True)
            pipe.execute()

    def _link(self, ok: bool, error: Exception | None = None) -> None:
        """Log the link's changes of state (both threads report; only changes are logged)."""
        with self._lock:
            changed, self.link_up = self.link_up != ok, ok
        if changed and ok:
            log.info("cluster_link_restored", node=self.node, url=self.url)
        elif changed:
            log.warning("cluster_link_lost", node=self.node, url=self.url, error=str(error))

    # -- leases ---------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        """Renew our lease, re-register if Redis forgot us, reap nodes whose lease ran out."""
        if not self._renew_lease():
            self._reassert_due = True
        if self._reassert_due:
            self._reassert()
        live = 1
        for node in self._redis.smembers(NODES):
            if node == self.node:
                continue
            if self._redis.exists(PREFIX + "node:" + node):
                live += 1
            elif self._redis.set(PREFIX + "reaping:" + node, self.node, nx=True,
                                 px=int(self._reaped_memory() * 1000)):
                log.warning("node_lost", node=node, members=self._reap_node(node))
        self.live_nodes = live

    def _reaped_memory(self) -> float:
        """How long the cluster remembers that it reaped a node: long enough for a node cut
        off for a while (docs/cluster.md: 60 s) to learn of it when it is back."""
        return max(120.0, 6 * self.node_timeout)

    def _renew_lease(self) -> bool:
        """Set our lease again; False if it was gone (Redis restarted, or we were reaped)."""
        with self._redis.pipeline(transaction=True) as pipe:
            info = {"since": self.started_at, "address": self.address,
                    "clients": len(self._hub.clients()) if self._hub else 0}
            pipe.set(PREFIX + "node:" + self.node, json.dumps(info),
                     px=int(self.node_timeout * 1000), get=True)
            pipe.sadd(NODES, self.node)
            previous, _ = pipe.execute()
        self._renew_at = time.monotonic() + self.node_timeout / 3
        return previous is not None

    def _reassert(self) -> None:
        """Our members and nicks back into Redis after it lost them. If the others reaped us
        meanwhile (they told their members ours were lost), announce ours as joining again;
        after a mere Redis restart they still know them, so nothing is said. A nick that
        someone elsewhere took meanwhile stays theirs: ours gets a guest nick (:meth:`_revoke`)."""
        if self._hub is None:  # at start: nothing of ours to put back
            self._reassert_due = False
            return
        if self._redis.getdel(PREFIX + "reaping:" + self.node) is not None:
            self._was_reaped = True
        rows = [row for row in self._hub.snapshot() if row[1] and row[4]]
        kept, lost = self._reclaim_nicks(rows)
        for row in lost:
            self._revoke(row[0], row[1])
        if self._was_reaped and kept:
            with self._redis.pipeline(transaction=True) as pipe:
                for _, nick, _, _, room, *_ in kept:
                    line = _line("r", room, wire.dumps(ev.Joined(nick, room)))
                    pipe.xadd(STREAM, {"o": self.node, "c": f"[{line}]"},
                              maxlen=STREAM_LENGTH, approximate=True)
                pipe.execute()
        log.warning("cluster_reasserted", node=self.node, members=len(rows),
                    reaped=self._was_reaped, renamed=len(lost))
        self._reassert_due = self._was_reaped = False

    def _reclaim_nicks(self, rows: list) -> tuple[list, list]:
        """Our member records and nick claims back, in one transaction; -> (rows whose nick is
        still ours, rows whose nick another node's client holds now)."""
        with self._redis.pipeline(transaction=True) as pipe:
            for client_id, nick, peer, _, room, _, connected_at, *_ in rows:
                owner = f"{self.node}|{client_id}"
                pipe.hset(MEMBERS, owner, _member_record(nick, room, peer, connected_at))
                pipe.hsetnx(NICKS, fold(nick), owner)
                pipe.hget(NICKS, fold(nick))
            replies = pipe.execute()
        kept, lost = [], []
        for row, holder in zip(rows, replies[2::3]):
            (kept if holder == f"{self.node}|{row[0]}" else lost).append(row)
        return kept, lost

    def _revoke(self, client_id: int, nick: str) -> None:
        """Give our client ``nick`` lost to another node a fresh guest nick, claimed first."""
        owner = f"{self.node}|{client_id}"
        while True:
            new = f"guest-{int(self._redis.incr(GUESTS))}"
            if self._hub.find(new) is None and self._redis.hsetnx(NICKS, fold(new), owner):
                break
        if self._hub.revoke_nick(client_id, nick, new, reaped=self._was_reaped):
            log.warning("cluster_nick_revoked", node=self.node, client_id=client_id, nick=nick,
                        new_nick=new)
        else:  # it left or took another nick meanwhile
            self._release(keys=[NICKS], args=[fold(new), owner])

    def _reap_node(self, node: str) -> int:
        """Announce ``node``'s members as lost and forget them; the departures carry an origin
        no node has, so every node (this one too) delivers them."""
        return self._reap(keys=[MEMBERS, NICKS, STREAM, NODES],
                          args=[node, f"lost:{node}", STREAM_LENGTH])

    # -- the reader thread --------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                reply = self._redis.xread({STREAM: self._last_id}, count=READ_COUNT,
                                          block=READ_BLOCK_MS)
            except Exception as exc:
                self._link(False, exc)
                self._stopping.wait(RETRY_SECONDS)
                continue
            self._link(True)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    if fields.get("o") not in (self.node, self._lost_origin):
                        self._apply_entry(entry_id, fields)

    def _apply_entry(self, entry_id: str, fields: dict) -> None:
        """One stream entry: a batch of lines (module docstring), decoded once. What does not
        decode is skipped with one warning (the stream is shared: anything may be in it)."""
        try:
            items = json.loads(fields["c"]) if "c" in fields else _former_batch(fields)
            if items.__class__ is not list:
                raise ValueError(f"not a list of lines: {str(items)[:80]!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("cluster_entry_skipped", entry=entry_id, error=str(exc)[:200])
            return
        try:
            origin = fields.get("o", "")
            run_room, run = None, []  # consecutive lines for one room: delivered together
            for item in items:
                if item.__class__ is not list or len(item) < 2 or item[1].__class__ is not str:
                    log.warning("cluster_entry_skipped", entry=entry_id,
                                error=f"not a line: {str(item)[:80]!r}")
                    continue
                if item[0] == "r":
                    event = self._event(item[2:])
                    if event is None:
                        continue
                    self._track(event, item[1], origin)
                    if item[1] != run_room and run:
                        self._hub.deliver(run_room, run)
                        run = []
                    run_room = item[1]
                    run.append(event)
                    continue
                if run:  # what came before it, first: the batch's order is the senders'
                    self._hub.deliver(run_room, run)
                    run = []
                self._apply(item)
            if run:
                self._hub.deliver(run_room, run)
        except Exception:  # one bad entry must not end the reader
            log.exception("cluster_entry_failed", entry=entry_id)

    def _apply(self, item: list) -> None:
        """A line that is not for a room: an admin action, a private line, an operator's."""
        kind = item[0]
        if kind == "cmd":
            if len(item) not in (5, 7):
                log.warning("cluster_entry_skipped", error=f"not a command: {str(item)[:80]!r}")
            elif item[1] in (self.node, "*") and self._on_command is not None:
                done = self._on_command(*item[2:5])
                if len(item) == 7:  # asked by item[5], which waits for the answer
                    self._append(wire.compact(["re", item[5], item[6], bool(done)]))
            return
        if kind == "gather":
            if (len(item) == 4 and isinstance(item[3], str) and item[3].startswith(ANSWERS)
                    and isinstance(item[2], dict) and self._on_command is not None):
                threading.Thread(target=self._answer, args=(item[1], item[2], item[3]),
                                 name="cluster-answer", daemon=True).start()
            else:
                log.warning("cluster_entry_skipped", error=f"not a gather: {str(item)[:80]!r}")
            return
        if kind == "re":
            if len(item) == 4 and item[1] == self.node:
                with self._lock:
                    answer = self._answers.get(item[2])
                if answer is not None and not answer.done():
                    answer.set_result(item[3])
            return
        if kind not in ("to", "all"):
            log.warning("cluster_entry_skipped", error=f"not a line: {str(item)[:80]!r}")
            return
        event = self._event(item[2:] if kind == "to" else item[1:])
        if event is None:
            return
        if kind == "to":
            self._hub.deliver_private(item[1], event)
        else:
            self._hub.broadcast_local(event)

    @staticmethod
    def _event(decoded: list):
        try:
            return wire.from_list(decoded)
        except wire.WireError as exc:
            log.warning("cluster_entry_skipped", error=str(exc))
            return None

    def _track(self, event, room: str, node: str) -> None:
        """Keep ``_remote`` in step with the membership changes other nodes announce."""
        if event.__class__ in _CHAT:
            return  # the common case: a line, no change of membership
        node = node.removeprefix("lost:")  # a reaped node's departures: that node's clients
        with self._lock:
            if isinstance(event, ev.Joined):
                self._remote[fold(event.nick)] = (event.nick, room, node)
            elif isinstance(event, (ev.Left, ev.Kicked)):
                self._forget(event.nick, node)
            elif isinstance(event, ev.Renamed):
                self._forget(event.old, node)
                self._remote[fold(event.new)] = (event.new, room, node)

    def _forget(self, nick: str, node: str) -> None:
        """Drop ``nick`` from ``_remote`` if ``node`` holds it there (``_lock`` held): after a
        nick was revoked (:meth:`_reassert`) the same nick may have meant another node's client."""
        entry = self._remote.get(fold(nick))
        if entry is not None and entry[2] == node:
            del self._remote[fold(nick)]


def _line(kind: str, target: str, encoded_event: str) -> str:
    """``[KIND, TARGET, *EVENT]`` as JSON text, from the event's own encoding (wire.dumps,
    which the history record reuses too): the event is encoded once."""
    return _line_head(kind, target) + encoded_event[1:]


@functools.lru_cache(maxsize=4096)
def _line_head(kind: str, target: str) -> str:
    """``[KIND,TARGET,`` (a few rooms and nicks carry nearly every line: encoded once each)."""
    return f"[{wire.compact(kind)},{wire.compact(target)},"


def _former_batch(fields: dict) -> list:
    """An entry in the format before ``c`` (``b``: a list of objects with the event as JSON
    text in ``e``, or one such object as the entry itself) as lines of today's format."""
    former = json.loads(fields["b"]) if "b" in fields else [fields]
    lines = []
    for item in former:
        if "cmd" in item:
            lines.append(["cmd", item.get("node"), *json.loads(item["cmd"])])
            continue
        event = json.loads(item.get("e", "null"))
        if not isinstance(event, list):
            event = [event]
        if "r" in item:
            lines.append(["r", item["r"], *event])
        elif "to" in item:
            lines.append(["to", item["to"], *event])
        elif "all" in item:
            lines.append(["all", *event])
    return lines


def _history_entry(value: str) -> Entry | None:
    """``TS ROOM EVENT`` (a history list's value, the event as wire.py encodes it) as an
    Entry; None for one that does not parse (skipped, like a bad stream entry)."""
    try:
        ts, room, encoded = value.split(" ", 2)
        event = wire.loads(encoded)
        return Entry(float(ts), room, KINDS[event.__class__], event.nick, event.text)
    except (ValueError, KeyError, wire.WireError) as exc:
        log.warning("cluster_history_entry_skipped", error=str(exc))
        return None


def _member_record(nick: str, room: str | None, peer: str, connected_at: float) -> str:
    """A ``members`` hash value: what other nodes show of one of this node's clients."""
    return json.dumps([nick, room, peer, round(connected_at, 3)])


class _ClientIds:
    """The listeners' client ids in cluster mode: blocks of ID_BLOCK taken from Redis as
    needed (one INCR per million connections, on the accept thread). Guarded by its lock:
    two listeners share it."""

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._next = self._end = 0

    def __iter__(self):
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._next >= self._end:
                block = int(self._bus._redis.incr(ID_BLOCKS))
                self._next, self._end = block * ID_BLOCK + 1, (block + 1) * ID_BLOCK
            self._next += 1
            return self._next - 1
