"""chatctl's human output: pure functions from reply results (docs/protocol.md §6 shapes) to lines of text.

No I/O and no click here, so every format is tested as a table; the CLI only picks the
function and echoes what it returns. Times are shown in UTC (``2026-12-06 04:20:00Z``, as chatd
itself and ``chatctl watch`` show them), durations compactly
(``1h 02m 03s`` for uptime, ``3m04s`` for a table cell).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

#: ``--duration`` units, largest first.
UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


# -- values ----------------------------------------------------------------------------------


def _split(seconds) -> tuple[int, int, int, int]:
    total = max(0, int(seconds or 0))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def uptime(seconds) -> str:
    """``45s``, ``2m 03s``, ``1h 02m 03s``, ``3d 01h 02m 03s``."""
    days, hours, minutes, secs = _split(seconds)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def idle(seconds) -> str:
    """A table cell: ``12s``, ``3m04s``, ``1h02m``, ``2d03h`` (two units at most)."""
    days, hours, minutes, secs = _split(seconds)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def utc_time(value, never: str = "never") -> str:
    """An epoch number or an ISO 8601 string -> ``YYYY-MM-DD HH:MM:SSZ``; None -> ``never``.

    One convention everywhere (issue 23): chatd tells a banned client its ban's end in UTC,
    replays history in UTC and streams UTC events, so chatctl prints UTC too, and says so with the
    ``Z`` that ``chatctl watch`` uses (one word: a table cell stays two columns), rather than
    the operator's local time with no zone beside a client's UTC. A string that does not parse
    is shown as it came rather than failing the whole command.
    """
    if value is None:
        return never
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if moment.tzinfo is None:  # the daemon speaks UTC
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def count(n, noun: str) -> str:
    """``1 client``, ``2 clients``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def host_port(host, port) -> str:
    host = str(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_duration(text: str) -> float:
    """``3600``, ``90s``, ``45m``, ``1h30m``, ``2d``, ``1w`` -> seconds (> 0); ValueError if not."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {text!r}") from None
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"not a positive duration: {text!r}")
    return seconds


# -- tables and key/value blocks ----------------------------------------------------------------


def table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> list[str]:
    """Aligned columns, two spaces apart; columns whose index is in ``right`` are right-aligned
    (numbers). No trailing spaces, so the last column may be free text."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(row):
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(out).rstrip()

    return [line(headers)] + [line(r) for r in cells]


def key_values(pairs: list[tuple[str, object]]) -> list[str]:
    """``key: value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return [f"{k + ':':<{width}} {v}" for k, v in pairs]


# -- one function per command ---------------------------------------------------------------------


def status(result: dict) -> list[str]:
    r = result
    pairs = [
        ("version", r.get("version")),
        ("pid", r.get("pid")),
        ("uptime", uptime(r.get("uptime"))),
        ("listen", host_port(r.get("host"), r.get("port"))),
        ("admin socket", r.get("admin_socket")),
        ("node", r.get("node")),
        ("nodes", r.get("nodes") if r.get("node") else None),
        ("clients", r.get("clients")),
        ("rooms", r.get("rooms")),
        ("bans", r.get("bans")),
        ("lines in", r.get("lines_in")),
        ("lines out", r.get("lines_out")),
        ("bytes in", r.get("bytes_in")),
        ("bytes out", r.get("bytes_out")),
    ]
    return key_values([(k, v) for k, v in pairs if v is not None])


CLIENT_HEADERS = ["ID", "NICK", "PEER", "ROOM", "CONNECTED", "IDLE", "SENDQ", "MUTED", "ACCOUNT",
                  "PROTOCOL"]


def clients(result: list[dict]) -> list[str]:
    """The client table; in cluster mode (rows carry a node) with a last column NODE. A row
    from a node that did not answer in time has no IDLE, SENDQ or MUTED (shown as -); a
    guest (logged in to no account) has ACCOUNT -. ACCOUNT and PROTOCOL (line, irc) come
    after the older contract's columns, as MUTED did, so scripts that cut the first ones
    still work."""
    cluster = any(c.get("node") for c in result)
    rows = []
    for c in result:
        here = "sendq" in c
        row = [c.get("id"), c.get("nick"), c.get("peer"), c.get("room") or "-",
               utc_time(c.get("connected_at", c.get("connected")), never="-"),
               idle(c.get("idle")) if here else "-", c.get("sendq") if here else "-",
               ("yes" if c.get("muted") else "no") if here else "-", c.get("account") or "-",
               c.get("protocol") or "-"]
        rows.append(row + [c.get("node")] if cluster else row)
    return table(CLIENT_HEADERS + (["NODE"] if cluster else []), rows, right=(0, 5, 6))


def nodes(result: list[dict]) -> list[str]:
    rows = [[n.get("node"), n.get("address"), n.get("clients"), uptime(n.get("uptime")),
             f"{n.get('last_seen', 0):.1f}s ago"] for n in result]
    return table(["NODE", "ADDRESS", "CLIENTS", "UPTIME", "LAST-SEEN"], rows, right=(2,))


def bans(result: list[dict]) -> list[str]:
    rows = [[b.get("address"), utc_time(b.get("expires")), b.get("reason") or "-"]
            for b in result]
    return table(["ADDRESS", "EXPIRES", "REASON"], rows)


def rooms(result: list[dict]) -> list[str]:
    rows = [[r.get("name"), r.get("members")] for r in result]
    return table(["ROOM", "MEMBERS"], rows, right=(1,))


def _who(result: dict) -> str:
    node = f" on {result['node']}" if result.get("node") else ""
    return f"{result.get('nick')} (id {result.get('id')}){node}"


def kicked(result: dict) -> list[str]:
    return [f"kicked {_who(result)}"]


def broadcast(result: dict) -> list[str]:
    where = f" in {result['room']}" if result.get("room") else ""
    return [f"broadcast sent to {count(result.get('recipients', 0), 'client')}{where}"]


def banned(result: dict) -> list[str]:
    expires = result.get("expires")
    until = f"until {utc_time(expires)}" if expires else "with no expiry"
    gone = count(result.get("disconnected", 0), "client")
    return [f"banned {result.get('address')} {until}, disconnected {gone}"]


def unbanned(result: dict) -> list[str]:
    return [f"unbanned {result.get('address')}"]


def muted(result: dict) -> list[str]:
    return [f"{'muted' if result.get('muted') else 'unmuted'} {_who(result)}"]


def reloaded(result: dict) -> list[str]:
    restart = result.get("restart_required") or []
    if "config" in result and result["config"] is None:  # nothing to re-read
        return [("reloaded (chatd was started without -c: there is no file to re-read; "
                 "its options and defaults are unchanged)")]
    if not restart:
        return ["reloaded"]
    return ["reloaded; restart chatd to apply: " + ", ".join(map(str, restart))]


def shutting_down(result: dict) -> list[str]:
    return ["chatd is shutting down"]


def upgraded(result: dict) -> list[str]:
    return [(f"upgraded: pid {result.get('old_pid')} -> {result.get('new_pid')}, version "
             f"{result.get('old_version')} -> {result.get('new_version')}, "
             f"{count(result.get('clients'), 'client')} kept")]


def handed_over(result: dict) -> list[str]:
    return [(f"handed over to the fd store: pid {result.get('old_pid')}, "
             f"{count(result.get('clients'), 'client')} kept")]


def history(result: dict) -> list[str]:
    """The entries as SPEC §10 replays them: ``[YYYY-MM-DD HH:MM:SS] <NICK> TEXT`` (UTC)."""
    out = []
    for e in result["lines"]:
        stamp = e["time"].replace("T", " ").rstrip("Z")
        out.append(f"[{stamp}] * {e['nick']} {e['text']}" if e["kind"] == "me"
                   else f"[{stamp}] <{e['nick']}> {e['text']}")
    return out


def purged(result: dict) -> list[str]:
    return [f"purged {count(result['purged'], 'line')} of {result['room']}"]


# -- chatctl account -------------------------------------------------------------------------


def accounts(result: list[dict]) -> list[str]:
    rows = [[a.get("name"), utc_time(a.get("created"), never="-"), utc_time(a.get("last_login")),
             a.get("state"), "yes" if a.get("online") else "no"] for a in result]
    return table(["NAME", "CREATED", "LAST-LOGIN", "STATE", "ONLINE"], rows)


def account(result: dict) -> list[str]:
    return key_values([("name", result.get("name")),
                       ("created", utc_time(result.get("created"), never="-")),
                       ("last login", utc_time(result.get("last_login"))),
                       ("state", result.get("state")),
                       ("online", "yes" if result.get("online") else "no")])


def account_added(result: dict) -> list[str]:
    return [f"added account {result.get('name')}"]


def account_passwd(result: dict) -> list[str]:
    return [f"changed the password of account {result.get('name')}"]


def account_disabled(result: dict) -> list[str]:
    gone = count(result.get("disconnected", 0), "client")
    return [f"disabled account {result.get('name')}, disconnected {gone}"]


def account_enabled(result: dict) -> list[str]:
    return [f"enabled account {result.get('name')}"]


def account_deleted(result: dict) -> list[str]:
    gone = count(result.get("disconnected", 0), "client")
    return [f"deleted account {result.get('name')}, disconnected {gone}"]


# -- chatctl watch ---------------------------------------------------------------------------

#: Shown first, in this order, when an event has them; the rest follow as chatd logged them.
_WATCH_FIRST = ("nick", "room", "reason", "command", "outcome", "text")
_WATCH_HIDDEN = frozenset({"timestamp", "event", "level"})
_PLAIN = re.compile(r"[^\s\"'=\\]+")


def _watch_value(value) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def watch_event(event: dict) -> str:
    """One streamed event as one line: UTC time, event name, then ``key=value`` pairs
    (nick, room, reason first; a value with spaces or quotes is JSON-quoted), for example
    ``2026-12-03 09:40:01Z  room_joined  nick=alice room=dev left=lobby client_id=3``."""
    stamp = str(event.get("timestamp", ""))
    if len(stamp) >= 19:
        stamp = f"{stamp[:10]} {stamp[11:19]}Z"
    keys = [k for k in _WATCH_FIRST if k in event]
    keys += [k for k in event if k not in _WATCH_HIDDEN and k not in _WATCH_FIRST]
    pairs = " ".join(f"{k}={_watch_value(event[k])}" for k in keys
                     if event[k] is not None and event[k] != {})
    return f"{stamp}  {event.get('event', '?')}  {pairs}".rstrip()


# -- chatctl room ----------------------------------------------------------------------------


def room(result: dict) -> list[str]:
    if result.get("deleted"):
        return [f"deleted room {result.get('room')}"]
    names = lambda key: ", ".join(result.get(key) or []) or "-"  # noqa: E731
    modes = result.get("modes")
    return key_values([("room", result.get("room")),
                       ("founder", result.get("founder") or "-"),
                       ("topic", result.get("topic") or "-"),
                       ("modes", f"+{modes}" if modes else "-"),
                       ("operators", names("ops")), ("voiced", names("voiced")),
                       ("bans", names("bans")), ("invited", names("invites")),
                       ("members", names("members"))])
