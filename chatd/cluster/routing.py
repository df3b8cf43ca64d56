"""Admin actions across nodes: what ``chatctl`` on one node asks of the others.

- ``route``: kick/mute/unmute a client on another node, close an account's connection
  there (``account_off``: disabled or deleted) or have its client give up a nick an account's
  login needs (``reclaim``): a ``["cmd", NODE, ACTION, CLIENT ID,
  ARGS, ASK ID, UID]`` line down the stream, answered by that node with ``["re", ASKER, ASK
  ID, DONE]`` once carried out (or the client found gone); ``tell_all``: ban, unban, purge for
  every node (NODE ``*``, no ASK ID).
- ``remote_clients``: ``["gather", ACTION, ARGS, KEY]``: every other node pushes its rows,
  sealed, to the list KEY (``answers:NODE:ASK ID``, expiring), which the asking node pops:
  answers that may be large stay out of the stream every node reads.
- ``nodes``, ``locate``: the leases and records, read directly.

On the receiving side (:meth:`Routing.obey`, the reader thread): an action is carried out only
if it is in codec.COMMANDS with arguments that pass its check, and only from a node that holds
a lease now; it is logged as ``admin_command`` here, with the asking node and the uid of the
operator there. Gathers are answered on a bounded pool (MAX_GATHERS waiting at most), never on
the reader thread and never one thread each.

``_lock`` guards ``_answers`` (ask id -> Future) and ``_pending``; admin threads wait on a
Future or in a BLPOP, never while holding it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as NoAnswer

import structlog

from chatd.cluster import wire
from chatd.cluster.checks import node_name
from chatd.cluster.codec import Rejected, shown, text
from chatd.cluster.keys import ANSWERS, BANS, LEASE, MEMBERS, NICKS, NODES
from chatd.cluster.link import ClusterStartError, scrub
from chatd.cluster.orders import COMMANDS, GATHERS, ban_record, rows
from chatd.core.bus import ASKER_UID, ClusterUnavailable
from chatd.text import fold, is_valid_name

log = structlog.get_logger("chatd.cluster")
admin_log = structlog.get_logger("chatd.admin")

#: How long an admin action routed to another node waits for that node's answer: two stream
#: hops, normally a few milliseconds.
ANSWER_SECONDS = 3.0
#: How long ``list`` waits for the other nodes' rows; a node that has not answered by then is
#: shown from its member records (no counters). Answers left unread expire after ANSWER_TTL.
GATHER_SECONDS = 2.0
ANSWER_TTL = 30
#: Gathers waiting for an answer thread at most; more are dropped (the asker shows records).
MAX_GATHERS = 16
GATHER_THREADS = 2


class Routing:
    def __init__(self, link, publisher, leases) -> None:
        self.link = link
        self.publisher = publisher
        self.leases = leases
        self.on_command = None  # admincmds.carry_out (the service sets it)
        self._lock = threading.Lock()
        self._answers: dict[int, Future] = {}
        self._pending = 0
        self._asks = itertools.count(1)
        self._pool = ThreadPoolExecutor(GATHER_THREADS, thread_name_prefix="cluster-answer")

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- asking (admin threads) ----------------------------------------------------------

    def route(self, node: str, action: str, client_id: int, args: dict) -> bool | None:
        """Have ``node`` carry out ``action`` on its client and wait for its answer: True
        (done), False (the client was not there any more), None (no answer within
        ANSWER_SECONDS: the node may be gone, or just slow: the action may still happen).
        Raises ClusterUnavailable while the link to Redis is down (nothing is queued then)."""
        if not self.link.up:
            raise ClusterUnavailable("the link to Redis is down")
        ask, answer = next(self._asks), Future()  # (count's next() is atomic in CPython)
        with self._lock:
            self._answers[ask] = answer
        self.publisher.line(wire.compact(["cmd", node, action, client_id, args, ask,
                                          ASKER_UID.get()]))
        try:
            return bool(answer.result(ANSWER_SECONDS))
        except NoAnswer:
            return None
        finally:
            with self._lock:
                self._answers.pop(ask, None)

    def reclaim(self, nick: str) -> bool:
        """The node whose client holds ``nick`` gives it up for an account's login here
        (``reclaim``, carried out by core/identity.py's ``give_up`` there, which releases
        the claim before it answers); True once it did. On the session thread."""
        try:
            found = self.locate(nick)
            return found is not None and self.route(
                found[0], "reclaim", found[1], {"nick": nick}) is True
        except ClusterUnavailable:
            return False

    def tell_all(self, action: str, args: dict) -> None:
        """An admin action for every node (this one carries it out itself), unanswered."""
        self.publisher.line(wire.compact(["cmd", "*", action, None, args, None,
                                          ASKER_UID.get()]))

    def ban(self, record: dict) -> None:
        """A ban for every node, now and at their next start (Redis is where bans live)."""
        field = record["address"]
        self.publisher.write(("hset", (BANS, field, self.link.seal.seal(
            f"{BANS}/{field}", json.dumps(record)))))
        self.tell_all("ban", record)

    def unban(self, address: str) -> None:
        self.publisher.write(("hdel", (BANS, address)))
        self.tell_all("unban", {"address": address})

    def share_bans(self, records: list[dict]) -> list[dict]:
        """At start: this node's own bans (its state file) join the cluster's, which Redis
        keeps; returns all of them that pass their check, which is what this node enforces."""
        link = self.link
        try:
            with link.redis.pipeline(transaction=True) as pipe:
                for record in records:
                    pipe.hsetnx(BANS, record["address"], link.seal.seal(
                        f"{BANS}/{record['address']}", json.dumps(record)))
                pipe.hgetall(BANS)
                stored = pipe.execute()[-1]
        except Exception as exc:
            raise ClusterStartError(f"cannot read the bans from Redis at {link.shown_url}: "
                                    f"{exc}") from None
        found = []
        for field, value in stored.items():
            try:
                found.append(ban_record(json.loads(link.seal.open(f"{BANS}/{text(field)}", value))))
            except (Rejected, ValueError) as exc:
                link.rejected("ban", str(exc), address=shown(field))
        return found

    def nodes(self) -> list[dict]:
        """The other live nodes: name, address, clients, uptime, seconds since last renewal."""
        link, found = self.link, []
        for raw in sorted(link.redis.smembers(NODES)):
            try:
                node = node_name(text(raw))
            except Rejected:
                continue
            key = LEASE + node
            with link.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, ttl = pipe.execute()
            if node == link.node or value is None:
                continue
            try:
                info = link.validator.lease(link.seal.open(key, value))
            except Rejected as exc:
                link.rejected("lease", str(exc), node=node)
                continue
            found.append({"node": node, "address": info["address"], "clients": info["clients"],
                          "uptime": round(time.time() - info["since"], 3),
                          "last_seen": round(max(0.0, self.leases.node_timeout - ttl / 1000), 3)})
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
        found = [row | {"node": node} for node in sorted(answers) if node in others
                 for row in answers[node]]
        return sorted(found + recorded, key=lambda row: row.get("id") or 0)

    def _recorded_clients(self, room: str | None, nodes: set) -> list[dict]:
        """The member records of ``nodes``' clients (no counters: those are the owner's)."""
        if not nodes:
            return []
        link, found = self.link, []
        for key, value in link.redis.hgetall(MEMBERS).items():
            try:
                owner = text(key)
                node, client_id = link.validator.owner(owner)
                if node not in nodes:
                    continue
                member = link.validator.member(
                    link.seal.open_hidden(f"{MEMBERS}/{owner}", value))
            except Rejected as exc:
                link.rejected("member", str(exc))
                continue
            if room is not None and fold(room.lstrip("#")) not in map(fold, member.rooms):
                continue
            found.append({"id": client_id, "nick": member.nick, "peer": member.peer,
                          "room": member.room, "connected_at": member.connected_at,
                          "account": member.account, "node": node})
        return found

    def _gather(self, action: str, args: dict, nodes: set) -> dict:
        """Ask every other node for ``action``'s result; -> {node: result} of those that
        answered within GATHER_SECONDS (on the admin thread that asks: it blocks, bounded)."""
        link = self.link
        if not link.up:
            raise ClusterUnavailable("the link to Redis is down")
        key = f"{ANSWERS}{link.node}:{next(self._asks)}"
        self.publisher.line(wire.compact(["gather", action, args, key]))
        answers: dict = {}
        deadline = time.monotonic() + GATHER_SECONDS
        try:
            while not nodes <= set(answers):
                left = deadline - time.monotonic()
                reply = link.redis.blpop([key], timeout=left) if left > 0.01 else None
                if reply is None:
                    break
                try:
                    answer = json.loads(link.seal.open_hidden(key, reply[1]))
                    answers[node_name(answer["node"])] = rows(answer["result"])
                except (Rejected, ValueError, TypeError, KeyError) as exc:
                    link.rejected("answer", str(exc) or "bad answer")
        finally:
            link.redis.delete(key)
        return answers

    def locate(self, target):
        """(node, client id, nick) of a client on another node, by id or nick; or None.
        Raises ClusterUnavailable when Redis cannot be asked."""
        found = self._record(target)
        return None if found is None else (found[0], found[1], found[2].nick)

    def describe(self, nick: str):
        """(node, checks.Member) of the client holding ``nick`` on another node, or None
        (``/whois``). Raises ClusterUnavailable when Redis cannot be asked."""
        if not is_valid_name(nick):  # (digits would be read as a client id)
            return None
        found = self._record(nick)
        return None if found is None else (found[0], found[2])

    def describe_many(self, nicks: list[str]) -> dict:
        """folded nick -> checks.Member, of those of ``nicks`` held by a client on another
        node (IRC's ``WHO #room``): two round trips however many they are. A claim or record
        that does not check out is left out (and logged). Raises ClusterUnavailable."""
        link, keys = self.link, list({fold(nick) for nick in nicks if is_valid_name(nick)})
        if not keys:
            return {}
        try:
            owners = {key: self._checked(self._claim, key, claim)
                      for key, claim in zip(keys, link.redis.hmget(NICKS, keys)) if claim}
            owners = {key: owner for key, owner in owners.items() if owner is not None}
            values = link.redis.hmget(MEMBERS, list(owners.values())) if owners else []
        except Exception as exc:  # the redis client's errors (imported only in cluster mode)
            raise ClusterUnavailable(str(exc)) from None
        found = {}
        for (key, owner), value in zip(owners.items(), values):
            member = self._checked(self._member, owner, value)
            if member is not None:
                found[key] = member
        return found

    def _checked(self, read, name: str, value):
        """``read(name, value)``, or None if ``value`` is None or does not check out."""
        if value is None:
            return None
        try:
            return read(name, value)
        except Rejected as exc:
            self.link.rejected("member", str(exc))
            return None

    def _claim(self, key: str, claim) -> str:
        """The owner (``node|client id``) a nick claim names."""
        return self.link.seal.open(f"{NICKS}/{key}", claim)

    def _member(self, owner: str, value):
        """The member record of ``owner``, or None if it is this node's."""
        link = self.link
        if link.validator.owner(owner)[0] == link.node:
            return None
        return link.validator.member(link.seal.open_hidden(f"{MEMBERS}/{owner}", value))

    def _record(self, target):
        """(node, client id, checks.Member) of a client on another node, or None."""
        link = self.link
        try:
            if isinstance(target, int) or str(target).isascii() and str(target).isdigit():
                owners = [text(k) for k, _ in link.redis.hscan_iter(MEMBERS,
                                                                    match=f"*|{int(target)}")]
            else:
                claim = link.redis.hget(NICKS, fold(str(target)))
                owners = [self._claim(fold(str(target)), claim)] if claim else []
            for owner in owners:
                value = link.redis.hget(MEMBERS, owner)
                member = self._member(owner, value) if value is not None else None
                if member is not None:
                    node, client_id = link.validator.owner(owner)
                    return node, client_id, member
        except Rejected as exc:
            link.rejected("member", str(exc))
        except Exception as exc:  # the redis client's errors (imported only in cluster mode)
            raise ClusterUnavailable(str(exc)) from None
        return None

    # -- answering (the reader thread) ---------------------------------------------------

    def obey(self, writer: str, item: list) -> None:
        """``["cmd", NODE, ACTION, CLIENT ID, ARGS, ASK ID, UID]`` from ``writer``."""
        if len(item) != 7:
            raise Rejected("not a command")
        _, target, action, client_id, args, ask, uid = item
        if target != self.link.node and target != "*":
            return
        whose, check = COMMANDS.get(action) or (None, None)
        if whose is None or (whose == "client") != (client_id.__class__ is int) \
                or not (ask is None or ask.__class__ is int) \
                or not (uid is None or uid.__class__ is int):
            raise Rejected(f"not a command: {str(action)[:20]!r}")
        args = check(args)
        if not self.leases.alive(writer):
            raise Rejected(f"{action} from {writer}, which holds no lease")
        done = self.on_command(action, client_id, args) if self.on_command else None
        admin_log.info("admin_command", command=action, args=args, client_id=client_id,
                       outcome="not_found" if done is False else "ok", node=writer, uid=uid)
        if ask is not None:  # the asker waits for the answer
            self.publisher.line(wire.compact(["re", writer, ask, bool(done)]))

    def answered(self, writer: str, item: list) -> None:
        """``["re", ASKER, ASK ID, DONE]``: the answer a route() of ours waits for."""
        if len(item) != 4 or item[1] != self.link.node:
            return
        with self._lock:
            answer = self._answers.get(item[2])
        if answer is not None and not answer.done():
            answer.set_result(item[3] is True)

    def asked(self, writer: str, item: list) -> None:
        """``["gather", ACTION, ARGS, KEY]``: answered on the pool, if it has room."""
        if len(item) != 4 or item[1] not in GATHERS or item[3].__class__ is not str \
                or not item[3].startswith(f"{ANSWERS}{writer}:"):
            raise Rejected("not a gather")
        args = GATHERS[item[1]](item[2])
        with self._lock:
            if self._pending >= MAX_GATHERS:
                raise Rejected(f"{MAX_GATHERS} gathers already waiting")
            self._pending += 1
        self._pool.submit(self._answer, item[1], args, item[3])

    def _answer(self, action: str, args: dict, key: str) -> None:
        try:
            result = self.on_command(action, None, args)
            payload = json.dumps({"node": self.link.node, "result": result}, default=str)
            with self.link.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, self.link.seal.seal_hidden(key, payload))
                pipe.expire(key, ANSWER_TTL)
                pipe.execute()
        except Exception as exc:  # the asker shows our member records instead
            log.warning("cluster_answer_failed", action=action, error=scrub(str(exc), self.link.url))
        finally:
            with self._lock:
                self._pending -= 1
