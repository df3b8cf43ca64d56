"""The admin commands (SPEC §6): one method each, taking the validated ``args`` and returning a
JSON-able result or raising :class:`~chatd.adminproto.AdminError`.

Arguments arrive already checked against ``adminproto.COMMANDS`` (names and types), so a handler
only checks meaning (does the client exist, is the address valid). Handlers run on an admin
connection thread; they reach the chat side only through the hub (its lock), the flusher
(queued work) and the ban list, never a client socket.
"""

from __future__ import annotations

import os
import time

from chatd import __version__
from chatd.adminproto import AdminError
from chatd.bans import covers, iso, parse_network
from chatd.events import Announcement, Banned, Close, YouWereKicked
from chatd.protocol import sanitize

DEFAULT_KICK_REASON = "no reason given"
MAX_BAN_SECONDS = 100 * 365 * 86400  # far enough; keeps expiry times printable (year < 9999)


class AdminCommands:
    def __init__(self, service) -> None:
        self.service = service

    @property
    def log_messages(self) -> bool:
        return self.service.config.log_messages

    def run(self, cmd: str, args: dict):
        """Returns (result, action to run after the reply is sent, or None)."""
        result = getattr(self, f"do_{cmd}")(**args)
        if cmd == "shutdown":
            return result, self.service.request_shutdown
        return result, None

    # -- queries ------------------------------------------------------------------------------

    def do_status(self) -> dict:
        service = self.service
        host, port = service.listener.address
        stats = service.hub.stats()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - service.started_at, 3),
            "host": host,
            "port": port,
            "bans": len(service.bans.active()),
            "admin_socket": service.admin.path,
            **stats,
        }

    def do_list(self, room: str | None = None) -> list[dict]:
        clients = self.service.hub.clients()
        if room is not None:
            clients = [c for c in clients if c.room is not None and c.room.name.casefold() == room.lstrip("#").casefold()]
        now = time.monotonic()
        when = _IsoSeconds()
        return [_describe(c, now, when) for c in sorted(clients, key=lambda c: c.id)]

    def do_rooms(self) -> list[dict]:
        return [{"name": name, "members": count} for name, count in self.service.hub.rooms()]

    def do_bans(self) -> list[dict]:
        return [ban.as_dict() for ban in self.service.bans.active()]

    # -- actions ------------------------------------------------------------------------------

    def do_kick(self, target, reason: str | None = None) -> dict:
        client = self._client(target)
        reason = sanitize(reason or "").strip() or DEFAULT_KICK_REASON
        self.service.flusher.disconnect(client.outbox, Close("kicked", reason), YouWereKicked(reason))
        return {"id": client.id, "nick": client.nick, "reason": reason}

    def do_broadcast(self, text: str, room: str | None = None) -> dict:
        text = sanitize(text).strip()
        if not text:
            raise AdminError("bad_args", "broadcast: 'text' is empty")
        count = self.service.hub.broadcast(Announcement(text), room)
        if count is None:
            raise AdminError("not_found", f"no such room {room}")
        return {"recipients": count, "room": room}

    def do_mute(self, target) -> dict:
        return self._set_muted(target, True)

    def do_unmute(self, target) -> dict:
        return self._set_muted(target, False)

    def do_ban(self, address: str, duration: float | None = None, reason: str | None = None) -> dict:
        network = _network(address)
        if duration is not None and not 0 < duration <= MAX_BAN_SECONDS:
            raise AdminError("bad_args", f"ban: 'duration' must be > 0 and at most {MAX_BAN_SECONDS} "
                             "seconds (100 years); leave it out for a ban without expiry")
        ban, error = self.service.bans.add(network, sanitize(reason or "").strip(), duration)
        notice = Banned()
        disconnected = 0
        for client in self.service.hub.clients():
            if covers(network, client.ip):
                self.service.flusher.disconnect(client.outbox, Close("banned"), notice)
                disconnected += 1
        if error is not None:
            raise AdminError("not_saved", f"the ban on {network} is in force but was not saved "
                             f"({error.strerror or error}); it will not survive a restart")
        return {**ban.as_dict(), "disconnected": disconnected}

    def do_unban(self, address: str) -> dict:
        network = _network(address)
        ban, error = self.service.bans.remove(network)
        if ban is None:
            raise AdminError("not_found", f"{network} is not banned")
        if error is not None:
            raise AdminError("not_saved", f"{network} is unbanned but that was not saved "
                             f"({error.strerror or error}); the ban returns after a restart")
        return {"address": str(network)}

    def do_reload(self) -> dict:
        ok, message = self.service.reload()
        if not ok:
            raise AdminError("reload_failed", message)
        return {"reloaded": True, "config": self.service.config.config_path}

    def do_shutdown(self) -> dict:
        return {"shutting_down": True}

    # -- helpers ------------------------------------------------------------------------------

    def _client(self, target):
        client = self.service.hub.lookup(target)
        if client is None:
            raise AdminError("not_found", f"no such client {target}")
        return client

    def _set_muted(self, target, muted: bool) -> dict:
        client = self._client(target)
        client.muted = muted
        return {"id": client.id, "nick": client.nick, "muted": muted}


class _IsoSeconds(dict):
    """Epoch seconds -> ISO 8601 text, each whole second formatted once: clients arrive in
    bursts, and datetime formatting was half of what ``list`` cost per client."""

    def __missing__(self, second: int) -> str:
        text = self[second] = iso(second)
        return text


def _describe(client, now: float, when: _IsoSeconds) -> dict:
    outbox = client.outbox
    return {
        "id": client.id,
        "nick": client.nick,
        "peer": client.peer,
        "ip": client.ip,
        "room": client.room.name if client.room is not None else None,
        "connected": when[int(client.connected_at)],
        "connected_at": round(client.connected_at, 3),
        "idle": round(max(0.0, now - client.last_active), 1),
        "bytes_in": client.bytes_in,
        "bytes_out": outbox.bytes_out,
        "lines_in": client.lines_in,
        "lines_out": outbox.lines_out,
        "sendq": outbox.backlog_bytes,
        "muted": client.muted,
    }


def _network(address: str):
    try:
        return parse_network(address)
    except ValueError:
        raise AdminError("invalid_address", f"{address[:64]!r} is not an IP address or network") from None

