"""What a routed admin action may carry: the actions another node may ask this one to carry
out (:data:`COMMANDS`), what each one's arguments may be, and what a gathered ``list`` answer
may hold (:func:`rows`). A node obeys only what is here, with arguments that pass their check
(routing.py); what fails raises codec.Rejected, as the rest of checks.py's do. Pure functions.
"""

from __future__ import annotations

from chatd.cluster.checks import MAX_ADMIN_TEXT, clean, epoch, name, room_key
from chatd.cluster.codec import Rejected
from chatd.text import is_valid_name, sanitize


def _kick_args(args) -> dict:
    reason = args.get("reason") if isinstance(args, dict) else None
    return {"reason": None if reason is None else clean(reason, MAX_ADMIN_TEXT)}


def _named(key: str):
    """The check of arguments that are one name under ``key`` (``reclaim``'s nick, the
    account ``account_off`` closes)."""
    def check(args) -> dict:
        return {key: name(args.get(key) if isinstance(args, dict) else None)}
    return check


def _room_kick_args(args) -> dict:
    """A kick out of a room by another node's operator (core/stewardship.py)."""
    if not isinstance(args, dict):
        raise Rejected("bad arguments")
    return {"room": name(args.get("room")), "by": name(args.get("by")),
            "reason": clean(args.get("reason"), MAX_ADMIN_TEXT)}


def _no_args(args) -> dict:
    return {}


def _room_args(args) -> dict:
    if not isinstance(args, dict):
        raise Rejected("bad arguments")
    return {"room": room_key(args.get("room"))}


def _rows_args(args) -> dict:
    room = args.get("room") if isinstance(args, dict) else None
    if room is not None and (room.__class__ is not str or not is_valid_name(room.lstrip("#"))):
        raise Rejected("bad room")
    return {"room": room}


def _address_args(args) -> dict:
    from chatd.store.bans import parse_network

    address = args.get("address") if isinstance(args, dict) else None
    try:
        return {"address": str(parse_network(address))}
    except (ValueError, TypeError, AttributeError):
        raise Rejected("bad address") from None


def ban_record(record) -> dict:
    """A ban record (bans.py's ``as_record``) as another node or the ``bans`` hash has it."""
    if not isinstance(record, dict):
        raise Rejected("not a ban record")
    created, expires = record.get("created"), record.get("expires")
    if not epoch(created) or expires is not None and not epoch(expires):
        raise Rejected("bad ban times")
    return {**_address_args(record), "reason": clean(record.get("reason", ""), MAX_ADMIN_TEXT),
            "created": created, "expires": expires}


#: action -> (whose: "client" for one client (its id given), "all" for every node; the
#: arguments' check). What is not here is not obeyed.
COMMANDS = {
    "kick": ("client", _kick_args), "mute": ("client", _no_args), "unmute": ("client", _no_args),
    "reclaim": ("client", _named("nick")), "account_off": ("client", _named("account")),
    "room_kick": ("client", _room_kick_args),
    "ban": ("all", ban_record), "unban": ("all", _address_args), "purge": ("all", _room_args),
}
GATHERS = {"rows": _rows_args}

#: What a gathered ``rows`` answer may hold per client (admincmds._describe), and its size.
ROW_FIELDS = frozenset(("id", "nick", "peer", "ip", "room", "connected", "connected_at", "idle",
                        "bytes_in", "bytes_out", "lines_in", "lines_out", "sendq", "muted",
                        "account", "protocol"))
MAX_ROWS = 100_000


def rows(result) -> list[dict]:
    """Another node's ``list`` rows: scalars only, text sanitised and short."""
    if not isinstance(result, list) or len(result) > MAX_ROWS:
        raise Rejected("not a list of rows")
    out = []
    for row in result:
        if not isinstance(row, dict):
            raise Rejected("not a row")
        clean_row = {}
        for key, value in row.items():
            if key not in ROW_FIELDS:
                continue
            if isinstance(value, str):
                value = sanitize(value)[:256]
            elif value is not None and value.__class__ not in (int, float, bool):
                raise Rejected(f"bad value for {key}")
            clean_row[key] = value
        out.append(clean_row)
    return out
