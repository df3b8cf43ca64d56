"""The admin commands that only read: status, list, nodes, rooms, bans, history (and purge,
which shares history's checks).

Each handler takes the :class:`~chatd.admin.commands.AdminContext` and the request's checked
arguments and returns the JSON-able result; what a query reads of the chat it takes from the
hub in one snapshot and formats outside the hub lock.
"""

from __future__ import annotations

import os
import time

from chatd import __version__
from chatd.admin.protocol import AdminError
from chatd.core.bus import ClusterUnavailable
from chatd.store.bans import iso
from chatd.text import fold, is_valid_name

#: ``history`` without ``lines``: as many as the chat's /history shows.
HISTORY_DEFAULT = 20


def do_status(ctx) -> dict:
    facts = ctx.facts()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.time() - facts["started_at"], 3),
        "host": facts["host"],
        "port": facts["port"],
        "bans": len(ctx.bans.active()),
        "admin_socket": facts["admin_socket"],
        **ctx.hub.stats(),
        "node": ctx.bus.node,
        "nodes": 1 + len(ctx.bus.nodes()),
        **(history.counts() if (history := ctx.history) is not None and history.lines else {}),
    }


def do_list(ctx, room: str | None = None, local: bool = False) -> list[dict]:
    """This node's clients, then (unless ``local``) the other nodes' as they tell
    (cluster/routing.py: a node that does not answer in time is shown without its counters)."""
    try:
        remote = [] if local else ctx.bus.remote_clients(room)
    except ClusterUnavailable as exc:
        raise AdminError("cluster_unavailable", f"cannot reach the other nodes ({exc}); "
                         "list --local shows this node's clients") from None
    mine = local_rows(ctx, room)
    if mine is None and not remote:
        raise no_such_room(room)
    when = _IsoSeconds()
    for row in remote:
        if "connected" not in row and row.get("connected_at") is not None:
            row["connected"] = when[int(row["connected_at"])]
    return (mine or []) + remote


def local_rows(ctx, room: str | None = None) -> list[dict] | None:
    """This node's clients as ``list`` shows them (None: no such room here)."""
    rows = ctx.hub.snapshot(room)
    if rows is None:
        return None
    now = time.monotonic()
    when = _IsoSeconds()
    node = ctx.bus.node
    return [{**_describe(row, now, when), "node": node} for row in rows]


def do_nodes(ctx) -> list[dict]:
    facts = ctx.facts()
    me = {"node": ctx.bus.node or f"{facts['host']}:{facts['port']}",
          "address": f"{facts['host']}:{facts['port']}",
          "clients": ctx.hub.stats()["clients"],
          "uptime": round(time.time() - facts["started_at"], 3), "last_seen": 0.0}
    return [me, *ctx.bus.nodes()]


def do_rooms(ctx) -> list[dict]:
    return [{"name": name, "members": count} for name, count in ctx.hub.rooms()]


def do_bans(ctx) -> list[dict]:
    return [ban.as_dict() for ban in ctx.bans.active()]


def do_history(ctx, room: str, lines: int | None = None) -> dict:
    """SPEC §10 ``chatctl history``: the newest ``lines`` entries, oldest first."""
    history, name = _history(ctx, room)
    count = HISTORY_DEFAULT if lines is None else lines
    if not 0 < count:
        raise AdminError("bad_args", "history: 'lines' must be > 0")
    entries = history.tail(name).last(min(count, history.lines))
    if not entries and fold(name) not in {fold(room) for room, _ in ctx.hub.rooms()}:
        raise no_such_room(name)  # as list says it: nothing was ever said there, nobody is in it
    return {"room": name, "lines": [entry.as_dict() for entry in entries]}


def do_purge(ctx, room: str) -> dict:
    history, name = _history(ctx, room)
    return {"room": name, "purged": history.purge(name)}


def _history(ctx, room: str):
    """(the history, the room's name without its #); history_off or bad_args if none."""
    history = ctx.history
    if history is None or not history.lines:
        raise AdminError("history_off")
    name = room.removeprefix("#")
    if not is_valid_name(name):
        raise AdminError("bad_args", f"invalid room {room[:64]!r}")
    return history, name


def no_such_room(room: str) -> AdminError:
    """One answer for list and broadcast alike."""
    return AdminError("not_found", f"no such room {room[:64]}")


class _IsoSeconds(dict):
    """Epoch seconds -> ISO 8601 text, each whole second formatted once: clients arrive in
    bursts, and formatting each one's time apart was much of what ``list`` cost per client."""

    def __missing__(self, second: int) -> str:
        text = self[second] = iso(second)
        return text


def _describe(row, now: float, when: _IsoSeconds) -> dict:
    """One ``Hub.snapshot`` row (census.Row) -> the ``list`` entry (formatted outside the hub
    lock)."""
    return {
        "id": row.id,
        "nick": row.nick,
        "peer": row.peer,
        "ip": row.ip,
        "room": row.room,
        "connected": when[int(row.connected_at)],
        "connected_at": round(row.connected_at, 3),
        "idle": round(max(0.0, now - row.last_active), 1),
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "lines_in": row.lines_in,
        "lines_out": row.lines_out,
        "sendq": row.sendq,
        "muted": row.muted,
        "account": row.account,  # the account it is logged in to; None: a guest
        "protocol": row.protocol,  # "line" or "irc" (docs/protocol.md §14)
    }
