"""The admin commands that act on clients: kick, mute, unmute, broadcast, ban, unban; and
:func:`carry_out`, the same actions on this node's clients when another node's admin asks.

A client is acted on where it is: here through the hub and the flusher (queued lines, never a
socket write), or on its own node through the bus, whose answer the reply waits for.
"""

from __future__ import annotations

import ipaddress
from functools import partial

from chatd.admin.accounts import account_off_here, reclaim_here
from chatd.admin.protocol import AdminError
from chatd.admin.queries import local_rows, no_such_room
from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import Announcement, YouAreMuted, YouWereKicked
from chatd.store.bans import covers, parse_network
from chatd.text import sanitize

DEFAULT_KICK_REASON = "no reason given"
MAX_BAN_SECONDS = 100 * 365 * 86400  # far enough; keeps expiry times printable (year < 9999)


def do_kick(ctx, target, reason: str | None = None) -> dict:
    reason = sanitize(reason or "").strip() or DEFAULT_KICK_REASON
    return _act(ctx, "kick", target, {"reason": reason})


def do_mute(ctx, target) -> dict:
    return _act(ctx, "mute", target, {})


def do_unmute(ctx, target) -> dict:
    return _act(ctx, "unmute", target, {})


def do_broadcast(ctx, text: str, room: str | None = None) -> dict:
    text = sanitize(text).strip()
    if not text:
        raise AdminError("bad_args", "broadcast: 'text' is empty")
    count = ctx.hub.broadcast(Announcement(text), room)
    if count is None:
        raise no_such_room(room)
    return {"recipients": count, "room": room}


def do_ban(ctx, address: str, duration: float | None = None, reason: str | None = None,
           force: bool = False) -> dict:
    network = _network(address, strict=not force)
    if duration is not None and not 0 < duration <= MAX_BAN_SECONDS:
        raise AdminError("bad_args", f"ban: 'duration' must be > 0 and at most {MAX_BAN_SECONDS} "
                         "seconds (100 years); leave it out for a ban without expiry")
    ban, error = ctx.bans.add(network, sanitize(reason or "").strip(), duration)
    ctx.bus.ban(ban.as_record())  # the other nodes enforce it as they read it
    disconnected = _disconnect_banned(ctx, ban)
    if error is not None:
        raise AdminError("not_saved", f"the ban on {network} is in force but was not saved "
                         f"({error.strerror or error}); it will not survive a restart")
    return {**ban.as_dict(), "disconnected": disconnected}


def do_unban(ctx, address: str) -> dict:
    network = _network(address)
    ban, error = ctx.bans.remove(network)
    if ban is None:
        raise AdminError("not_found", f"{network} is not banned")
    ctx.bus.unban(str(network))
    if error is not None:
        raise AdminError("not_saved", f"{network} is unbanned but that was not saved "
                         f"({error.strerror or error}); the ban returns after a restart")
    return {"address": str(network)}


def _act(ctx, action: str, target, args: dict) -> dict:
    """Kick, mute or unmute ``target`` here, or on the node it is on: the reply waits for
    that node's answer (cluster/routing.py ANSWER_SECONDS at most)."""
    client = ctx.hub.lookup(target)
    if client is not None:
        carry_out(ctx, action, client.id, args)
        found = {"id": client.id, "nick": client.nick, "node": ctx.bus.node}
    else:
        try:
            remote = ctx.bus.locate(target)
            if remote is None:
                raise AdminError("not_found", f"no such client {target}")
            node, client_id, nick = remote
            done = ctx.bus.route(node, action, client_id, args)
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


def _disconnect_banned(ctx, ban) -> int:
    """End this node's clients that ``ban`` covers, telling them why (:meth:`bans.Ban.notice`,
    also what a banned client is told when refused at connect)."""
    notice, disconnected = ban.notice(), 0
    for client in ctx.hub.clients():
        if covers(ban.network, client.ip):
            ctx.flusher.disconnect(client.outbox, Close("banned"), notice)
            disconnected += 1
    return disconnected


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


# -- carried out here: for this node's admin, or another node's through the bus ---------------

def carry_out(ctx, action: str, client_id: int | None, args: dict):
    """One of this node's clients: kick it, or mute/unmute it; or a ban, unban, purge or
    ``list`` rows asked of every node. A client gone meanwhile is simply not there (False)."""
    return _HERE[action](ctx, client_id, args)


def _on_client(change):
    """An action on one client of this node: False if it is not (or no longer) here."""
    def carry(ctx, client_id: int, args: dict) -> bool:
        client = ctx.hub.lookup(client_id)
        if client is None:
            return False
        change(ctx, client, args)
        return True
    return carry


def _kick(ctx, client, args: dict) -> None:
    reason = args.get("reason") or DEFAULT_KICK_REASON
    ctx.flusher.disconnect(client.outbox, Close("kicked", reason), YouWereKicked(reason))


def _set_muted(muted: bool, ctx, client, args: dict) -> None:
    """Tell the client only when that changed: muting twice says nothing the second time."""
    changed, client.muted = client.muted != muted, muted
    if changed:
        ctx.hub.send_to(client, YouAreMuted(muted))


def _ban_here(ctx, _client_id, args: dict) -> None:
    _disconnect_banned(ctx, ctx.bans.apply(args))


def _unban_here(ctx, _client_id, args: dict) -> None:
    ctx.bans.lift(args["address"])


def _rows_here(ctx, _client_id, args: dict) -> list[dict]:
    """Another node's ``chatctl list``: our rows."""
    return local_rows(ctx, args.get("room")) or []


def _purge_here(ctx, _client_id, args: dict) -> None:
    """Another node's ``chatctl purge``: Redis is done, drop our tail."""
    if ctx.history is not None and ctx.history.lines:
        ctx.history.forget(args["room"])


#: action -> what this node does (the actions cluster/checks.py lets through, and kick, mute
#: and unmute of this node's own admin).
_HERE = {
    "kick": _on_client(_kick),
    "mute": _on_client(partial(_set_muted, True)),
    "unmute": _on_client(partial(_set_muted, False)),
    "ban": _ban_here,
    "unban": _unban_here,
    "rows": _rows_here,
    "purge": _purge_here,
    "account_off": account_off_here,
    "reclaim": reclaim_here,
    "room_kick": _on_client(lambda ctx, client, args: ctx.hub.kick_here(
        client, args["room"], args["by"], args["reason"])),
}
