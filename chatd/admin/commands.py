"""The admin commands (docs/protocol.md §6): one method each, taking the validated ``args`` and returning a
JSON-able result or raising :class:`~chatd.admin.protocol.AdminError`.

Arguments arrive already checked against ``adminproto.COMMANDS`` (names and types), so a handler
only checks meaning (does the client exist, is the address valid). Handlers run on an admin
connection thread; they reach the chat side only through the hub (its lock), the flusher
(queued work) and the ban list, never a client socket.

What the commands may use of the daemon is :class:`AdminContext`, built by the service, not the
service itself:

    hub               Hub: snapshot(), rooms(), stats(), lookup(), clients(), broadcast(),
                      send_to() (queued lines, never a socket write)
    flusher           Flusher: disconnect() (queued)
    bans              BanList: add(), remove(), active()
    config()          the Config in force now (a reload swaps it)
    reload(timeout)   run the reload on the main thread, as SIGHUP does, and wait for it:
                      (ok, message, restart_required keys); TimeoutError if it did not finish
    request_shutdown  queue a shutdown for the main thread (called after the reply is sent)
    upgrade(timeout, store)  have the main thread hand over to a new chatd (upgrade.py), or
                      with ``store`` to systemd's fd store (fdstore.py), and wait:
                      (ok, result or reason, call once the reply is sent)
    facts()           what status reports about the process: started_at, host, port,
                      admin_socket

:meth:`bans.Ban.notice` is what a banned client is told, both when it is disconnected by a new
ban and when it is refused at connect (server.py).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd import __version__
from chatd.admin.protocol import RELOAD_WAIT_SECONDS, AdminError
from chatd.core.bus import ClusterUnavailable
from chatd.core.events import Announcement, Close, YouAreMuted, YouWereKicked
from chatd.store.bans import covers, iso, parse_network
from chatd.text import fold, is_valid_name, sanitize

DEFAULT_KICK_REASON = "no reason given"
MAX_BAN_SECONDS = 100 * 365 * 86400  # far enough; keeps expiry times printable (year < 9999)
#: Each step of an upgrade (the new process starting, the freeze, its takeover) by default.
UPGRADE_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class AdminContext:
    """The narrow view of the daemon that admin commands get (see the module docstring)."""

    hub: Any
    flusher: Any
    bans: Any
    config: Callable[[], Any]
    reload: Callable[[float], tuple[bool, str, list[str]]]
    request_shutdown: Callable[[], None]
    facts: Callable[[], dict]
    bus: Any  # bus.py: the other nodes (LocalBus on a single node: there are none)
    upgrade: Callable[[float, bool], tuple] = None
    history: Any = None  # history.History: room tails (None or lines = 0: history is off)


class AdminCommands:
    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    @property
    def log_messages(self) -> bool:
        return self.ctx.config().log_messages

    def run(self, cmd: str, args: dict):
        """Returns (result, action to run after the reply is sent, or None)."""
        if cmd in ("upgrade", "handover"):
            return self._upgrade(store=cmd == "handover", **args)
        result = getattr(self, f"do_{cmd}")(**args)
        if cmd == "shutdown":
            return result, self.ctx.request_shutdown
        return result, None

    # -- queries ------------------------------------------------------------------------------

    def do_status(self) -> dict:
        facts = self.ctx.facts()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - facts["started_at"], 3),
            "host": facts["host"],
            "port": facts["port"],
            "bans": len(self.ctx.bans.active()),
            "admin_socket": facts["admin_socket"],
            **self.ctx.hub.stats(),
            "node": self.ctx.bus.node,
            "nodes": 1 + len(self.ctx.bus.nodes()),
            **(history.counts() if (history := self.ctx.history) is not None and history.lines
               else {}),
        }

    def do_list(self, room: str | None = None, local: bool = False) -> list[dict]:
        """This node's clients, then (unless ``local``) the other nodes' as they tell
        (cluster/routing.py: a node that does not answer in time is shown without its counters)."""
        try:
            remote = [] if local else self.ctx.bus.remote_clients(room)
        except ClusterUnavailable as exc:
            raise AdminError("cluster_unavailable", f"cannot reach the other nodes ({exc}); "
                             "list --local shows this node's clients") from None
        mine = self.local_rows(room)
        if mine is None and not remote:
            raise _no_such_room(room)
        when = _IsoSeconds()
        for row in remote:
            if "connected" not in row and row.get("connected_at") is not None:
                row["connected"] = when[int(row["connected_at"])]
        return (mine or []) + remote

    def local_rows(self, room: str | None = None) -> list[dict] | None:
        """This node's clients as ``list`` shows them (None: no such room here)."""
        rows = self.ctx.hub.snapshot(room)
        if rows is None:
            return None
        now = time.monotonic()
        when = _IsoSeconds()
        node = self.ctx.bus.node
        return [{**_describe(row, now, when), "node": node} for row in rows]

    def do_nodes(self) -> list[dict]:
        facts = self.ctx.facts()
        me = {"node": self.ctx.bus.node or f"{facts['host']}:{facts['port']}",
              "address": f"{facts['host']}:{facts['port']}",
              "clients": self.ctx.hub.stats()["clients"],
              "uptime": round(time.time() - facts["started_at"], 3), "last_seen": 0.0}
        return [me, *self.ctx.bus.nodes()]

    def do_rooms(self) -> list[dict]:
        return [{"name": name, "members": count} for name, count in self.ctx.hub.rooms()]

    def do_bans(self) -> list[dict]:
        return [ban.as_dict() for ban in self.ctx.bans.active()]

    def do_history(self, room: str, lines: int | None = None) -> dict:
        """SPEC §10 ``chatctl history``: the newest ``lines`` (20) entries, oldest first."""
        history, name = self._history(room)
        count = 20 if lines is None else lines
        if not 0 < count:
            raise AdminError("bad_args", "history: 'lines' must be > 0")
        entries = history.tail(name).last(min(count, history.lines))
        if not entries and fold(name) not in {fold(room) for room, _ in self.ctx.hub.rooms()}:
            raise _no_such_room(name)  # as list says it: nothing was ever said there, nobody is in it
        return {"room": name, "lines": [entry.as_dict() for entry in entries]}

    def do_purge(self, room: str) -> dict:
        history, name = self._history(room)
        return {"room": name, "purged": history.purge(name)}

    def _history(self, room: str):
        history = self.ctx.history
        if history is None or not history.lines:
            raise AdminError("history_off")
        name = room[1:] if room.startswith("#") else room
        if not is_valid_name(name):
            raise AdminError("bad_args", f"invalid room {room[:64]!r}")
        return history, name

    # -- actions ------------------------------------------------------------------------------

    def do_kick(self, target, reason: str | None = None) -> dict:
        reason = sanitize(reason or "").strip() or DEFAULT_KICK_REASON
        return self._act("kick", target, {"reason": reason})

    def do_broadcast(self, text: str, room: str | None = None) -> dict:
        text = sanitize(text).strip()
        if not text:
            raise AdminError("bad_args", "broadcast: 'text' is empty")
        count = self.ctx.hub.broadcast(Announcement(text), room)
        if count is None:
            raise _no_such_room(room)
        return {"recipients": count, "room": room}

    def do_mute(self, target) -> dict:
        return self._act("mute", target, {})

    def do_unmute(self, target) -> dict:
        return self._act("unmute", target, {})

    def do_ban(self, address: str, duration: float | None = None, reason: str | None = None,
               force: bool = False) -> dict:
        network = _network(address, strict=not force)
        if duration is not None and not 0 < duration <= MAX_BAN_SECONDS:
            raise AdminError("bad_args", f"ban: 'duration' must be > 0 and at most {MAX_BAN_SECONDS} "
                             "seconds (100 years); leave it out for a ban without expiry")
        ban, error = self.ctx.bans.add(network, sanitize(reason or "").strip(), duration)
        self.ctx.bus.ban(ban.as_record())  # the other nodes enforce it as they read it
        disconnected = self._disconnect_banned(ban)
        if error is not None:
            raise AdminError("not_saved", f"the ban on {network} is in force but was not saved "
                             f"({error.strerror or error}); it will not survive a restart")
        return {**ban.as_dict(), "disconnected": disconnected}

    def do_unban(self, address: str) -> dict:
        network = _network(address)
        ban, error = self.ctx.bans.remove(network)
        if ban is None:
            raise AdminError("not_found", f"{network} is not banned")
        self.ctx.bus.unban(str(network))
        if error is not None:
            raise AdminError("not_saved", f"{network} is unbanned but that was not saved "
                             f"({error.strerror or error}); the ban returns after a restart")
        return {"address": str(network)}

    def do_reload(self) -> dict:
        try:
            ok, message, restart_required = self.ctx.reload(RELOAD_WAIT_SECONDS)
        except TimeoutError:
            raise AdminError("timeout", f"the reload did not finish within "
                             f"{RELOAD_WAIT_SECONDS:g}s; it may still take effect") from None
        if not ok:
            raise AdminError("reload_failed", message)
        return {"reloaded": True, "config": self.ctx.config().config_path,
                "restart_required": restart_required}

    def do_shutdown(self) -> dict:
        return {"shutting_down": True}

    def _upgrade(self, store: bool, timeout: float | None = None):
        """-> (result, the call that lets the old process end once the reply is sent).
        ``store``: into systemd's fd store (handover), not to a new process (upgrade)."""
        wait = UPGRADE_WAIT_SECONDS if timeout is None else min(max(float(timeout), 0.5), 300.0)
        try:
            ok, outcome, replied = self.ctx.upgrade(wait, store)
        except TimeoutError:
            raise AdminError("timeout", "the upgrade did not finish in time; it may still "
                             "take effect") from None
        if not ok:
            raise AdminError("upgrade_failed", outcome)
        return outcome, replied

    # -- helpers ------------------------------------------------------------------------------

    def _act(self, action: str, target, args: dict) -> dict:
        """Kick, mute or unmute ``target`` here, or on the node it is on: the reply waits for
        that node's answer (cluster/routing.py ANSWER_SECONDS at most)."""
        client = self.ctx.hub.lookup(target)
        if client is not None:
            self.carry_out(action, client.id, args)
            found = {"id": client.id, "nick": client.nick, "node": self.ctx.bus.node}
        else:
            try:
                remote = self.ctx.bus.locate(target)
                if remote is None:
                    raise AdminError("not_found", f"no such client {target}")
                node, client_id, nick = remote
                done = self.ctx.bus.route(node, action, client_id, args)
            except ClusterUnavailable as exc:
                raise AdminError("cluster_unavailable",
                                 f"cannot reach the other nodes: {exc}") from None
            if done is None:
                raise AdminError("timeout", f"node {node} did not answer; the {action} of "
                                 f"{nick} may still happen there")
            if not done:
                raise AdminError("not_found", f"no such client {target} (it left {node})")
            found = {"id": client_id, "nick": nick, "node": node}
        if action == "kick":
            return {**found, "reason": args["reason"]}
        return {**found, "muted": action == "mute"}

    def _disconnect_banned(self, ban) -> int:
        """End this node's clients that ``ban`` covers, telling them why."""
        notice, disconnected = ban.notice(), 0
        for client in self.ctx.hub.clients():
            if covers(ban.network, client.ip):
                self.ctx.flusher.disconnect(client.outbox, Close("banned"), notice)
                disconnected += 1
        return disconnected

    def carry_out(self, action: str, client_id: int, args: dict) -> None:
        """One of this node's clients: kick it, or mute/unmute it (telling it when that
        changed; muting twice says nothing the second time). Also what another node's admin
        asks for, through the bus (a client gone meanwhile is simply not there)."""
        if action == "ban":
            self._disconnect_banned(self.ctx.bans.apply(args))
            return
        if action == "unban":
            self.ctx.bans.lift(args["address"])
            return
        if action == "rows":  # another node's `chatctl list`
            return self.local_rows(args.get("room")) or []
        if action == "purge":  # another node's `chatctl purge`: Redis is done, drop our tail
            if self.ctx.history is not None and self.ctx.history.lines:
                self.ctx.history.forget(args["room"])
            return
        client = self.ctx.hub.lookup(client_id)
        if client is None:
            return False
        if action == "kick":
            reason = args.get("reason") or DEFAULT_KICK_REASON
            self.ctx.flusher.disconnect(client.outbox, Close("kicked", reason), YouWereKicked(reason))
        elif action in ("mute", "unmute"):
            muted = action == "mute"
            changed, client.muted = client.muted != muted, muted
            if changed:
                self.ctx.hub.send_to(client, YouAreMuted(muted))
        return True


class _IsoSeconds(dict):
    """Epoch seconds -> ISO 8601 text, each whole second formatted once: clients arrive in
    bursts, and datetime formatting was half of what ``list`` cost per client."""

    def __missing__(self, second: int) -> str:
        text = self[second] = iso(second)
        return text


def _describe(row: tuple, now: float, when: _IsoSeconds) -> dict:
    """One ``Hub.snapshot`` row -> the ``list`` entry (formatted outside the hub lock)."""
    (client_id, nick, peer, ip, room, muted, connected_at, last_active, bytes_in, lines_in,
     bytes_out, lines_out, sendq) = row
    return {
        "id": client_id,
        "nick": nick,
        "peer": peer,
        "ip": ip,
        "room": room,
        "connected": when[int(connected_at)],
        "connected_at": round(connected_at, 3),
        "idle": round(max(0.0, now - last_active), 1),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "lines_in": lines_in,
        "lines_out": lines_out,
        "sendq": sendq,
        "muted": muted,
    }


def _no_such_room(room: str) -> AdminError:
    """One answer for list and broadcast alike."""
    return AdminError("not_found", f"no such room {room[:64]}")


def _network(address: str, strict: bool = False):
    """The network ``address`` names. With ``strict``, an address with host bits set
    (``127.0.0.1/0``) is refused rather than silently widened to its network (``0.0.0.0/0``,
    everyone): that is almost always a typo."""
    try:
        network = parse_network(address)
    except ValueError:
        raise AdminError("invalid_address", f"{address[:64]!r} is not an IP address or network") from None
    if strict:
        try:
            ipaddress.ip_network(address.strip(), strict=True)
        except ValueError:
            raise AdminError("invalid_address", f"{address.strip()} has host bits set; did you mean "
                             f"{network}? use --force to ban that network") from None
    return network
