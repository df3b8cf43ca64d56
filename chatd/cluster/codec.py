"""The trust boundary: what chatd writes to Redis is sealed here, what it reads back is opened
and validated here, before anything else in chatd sees it.

Whoever can write to Redis must not own the cluster (docs/security.md). So every value a node
trusts carries a MAC tag made with the cluster secret (secret.py): keyed BLAKE2b, which is a
MAC by design (RFC 7693 §2.5; no HMAC construction needed) and costs half of HMAC-SHA256 per
history line (0.7 vs 1.6 us, measured here). The tag is bound to where the value lives (its key, or the hash field it sits in): a value copied to another key, or a stream
entry with one byte changed, fails the check. A tag is the first :data:`TAG_LENGTH` characters
of the value (128 bits, hex); what follows is the payload. HMAC is deterministic, so a sealed
nick claim compares equal in a Lua script (the release is "delete if still ours").

Stream entries (fields ``o`` writer node, ``l`` lost node or empty, ``n`` sequence, ``c`` the
batch, ``s`` tag) also carry a sequence number that grows per writer (:class:`Sequence`): a
reader refuses an entry whose sequence is not above the last it took from that writer, and,
from a writer it has not heard yet, one older than its own start (less :data:`CLOCK_SKEW`),
so an entry copied back into the stream (a replay) is refused too.

A tag proves a node wrote the value, not that the value is sane: a node of another version or
a bug could still write nonsense, so every line is then validated as client input is (names by
the nick and room rule, text sanitised and no longer than a client could have sent) and every
record is type-checked. What fails raises :class:`Rejected`; the caller drops it with one
rate-limited ``cluster_entry_rejected`` warning (:class:`RejectLog`).

What only nodes may read is also encrypted (AES-256-GCM with a key derived from the same
secret, :meth:`Seal.hide`): private lines, the members' addresses, and the rows ``list``
gathers. Room lines and nicks are not: anyone may join a room and see them anyway.

Pure functions and small objects, no I/O; every byte from Redis comes in as ``bytes``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import threading
import time

import structlog

from chatd import events as ev
from chatd import wire
from chatd.protocol import fold, is_valid_name, sanitize

log = structlog.get_logger("chatd.cluster")

TAG_LENGTH = 32
#: The largest batch a reader decodes (a node writes at most WRITE_ENTRY_BYTES per entry).
MAX_ENTRY_BYTES = 4 * 1024 * 1024
WRITE_ENTRY_BYTES = 1024 * 1024
#: Lines in one entry: a node writes far fewer (what queues in 1 ms, or a reassert).
MAX_ENTRY_LINES = 100_000
#: How far another node's clock may lag ours and its first entries still be taken.
CLOCK_SKEW = 60.0
#: Operator text (broadcasts, kick reasons) comes from the admin socket: its request limit.
MAX_ADMIN_TEXT = 64 * 1024
MAX_PEER = 64  # "[ipv6]:port" fits
MAX_NODE = 64  # config.py's node_name rule
#: One ``cluster_entry_rejected`` warning per this many seconds, with the count since the last.
REJECT_LOG_SECONDS = 10.0


class Rejected(ValueError):
    """A value from Redis that this node does not take (its tag, shape or content)."""


class Seal:
    """Tags made and checked with the cluster secret. Thread-safe: no state but the key."""

    def __init__(self, secret: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._key = hashlib.sha256(b"chatd cluster\n" + secret).digest()
        self._aead = AESGCM(hashlib.sha256(b"chatd cluster encryption\n" + secret).digest())

    def tag(self, context: bytes, payload: bytes) -> str:
        return hashlib.blake2b(context + b"\n" + payload, key=self._key, digest_size=16).hexdigest()

    def seal(self, context: str, payload: str) -> str:
        """``payload`` with its tag in front, for the key or field ``context``."""
        return self.tag(context.encode(), payload.encode()) + payload

    def open(self, context: str | bytes, value) -> str:
        """The payload of a sealed value read back, as text; Rejected if the tag is wrong."""
        if not isinstance(value, bytes) or len(value) < TAG_LENGTH:
            raise Rejected("not a sealed value")
        if isinstance(context, str):
            context = context.encode()
        payload = value[TAG_LENGTH:]
        if not hmac.compare_digest(value[:TAG_LENGTH], self.tag(context, payload).encode()):
            raise Rejected("bad tag")
        return text(payload)

    def open_hidden(self, context: str, value) -> str:
        """The plaintext of a value written by :meth:`seal_hidden`."""
        return self.reveal(context, self.open(context, value))

    def seal_hidden(self, context: str, plaintext: str) -> str:
        return self.seal(context, self.hide(context, plaintext))

    # -- what only nodes may read: private lines, addresses ------------------------------

    def hide(self, context: str, plaintext: str) -> str:
        """``plaintext`` encrypted (AES-256-GCM, a random 96-bit nonce, ``context`` as the
        associated data) as base64 text: for what must not be read by whoever reads Redis."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return base64.b64encode(nonce + sealed).decode()

    def reveal(self, context: str, hidden) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.b64decode(hidden, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError, TypeError):
            raise Rejected("cannot decrypt") from None

    # -- stream entries -------------------------------------------------------------------

    def entry(self, writer: str, seq: int, body: str, lost: str = "") -> dict:
        """The fields of one stream entry carrying ``body`` (a batch of lines, JSON text)."""
        n = str(seq)
        return {"o": writer, "l": lost, "n": n, "c": body,
                "s": self.tag(_entry_context(writer.encode(), lost.encode(), n.encode()),
                              body.encode())}

    def open_entry(self, fields: dict) -> tuple[str, str, int, list]:
        """A stream entry read back -> (writer, lost node or "", sequence, lines): the
        tag checked before the batch is parsed."""
        try:
            writer, lost, n, body, tag = (fields[k] for k in (b"o", b"l", b"n", b"c", b"s"))
        except KeyError as exc:
            raise Rejected(f"no field {exc.args[0]!r}") from None
        if len(body) > MAX_ENTRY_BYTES:
            raise Rejected(f"entry of {len(body)} bytes")
        expected = self.tag(_entry_context(writer, lost, n), body).encode()
        if not hmac.compare_digest(tag, expected):
            raise Rejected("bad tag")
        if not n.isdigit() or len(n) > 20:
            raise Rejected("bad sequence")
        try:
            lines = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Rejected("batch is not JSON") from None
        if lines.__class__ is not list or len(lines) > MAX_ENTRY_LINES:
            raise Rejected("batch is not a list of lines")
        return text(writer), text(lost), int(n), lines


def _entry_context(writer: bytes, lost: bytes, n: bytes) -> bytes:
    return b"stream\n" + writer + b"\n" + lost + b"\n" + n


class Sequence:
    """This node's entry numbers: microseconds since the epoch, or one more than the last if
    the clock has not moved on, so they grow across restarts too. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


class Replays:
    """The last sequence taken from each writer (the reader thread alone)."""

    def __init__(self, started_at: float) -> None:
        self._floor = int((started_at - CLOCK_SKEW) * 1_000_000)
        self._last: dict[str, int] = {}

    def check(self, writer: str, seq: int) -> None:
        last = self._last.get(writer, self._floor)
        if seq <= last:
            raise Rejected(f"replayed entry (sequence {seq} <= {last})")
        if len(self._last) >= 4096 and writer not in self._last:  # tagged writers: nodes
            self._last.clear()
        self._last[writer] = seq


def text(value) -> str:
    """Bytes from Redis as text; Rejected for what is not UTF-8."""
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise Rejected("not UTF-8") from None


# -- validation: what a tagged value may say ---------------------------------------------


def name(value) -> str:
    """A nick or room name by the clients' rule (docs/protocol.md §1)."""
    if value.__class__ is not str or not is_valid_name(value):
        raise Rejected(f"bad name {str(value)[:40]!r}")
    return value


def node_name(value) -> str:
    if value.__class__ is not str or not 0 < len(value) <= MAX_NODE or not value.isprintable() \
            or " " in value or "|" in value:
        raise Rejected(f"bad node name {str(value)[:40]!r}")
    return value


def clean(value, limit: int) -> str:
    """Text as a client could have sent it: sanitised, at most ``limit`` UTF-8 bytes."""
    if value.__class__ is not str:
        raise Rejected("text is not a string")
    value = sanitize(value)
    if len(value) > limit // 4 and len(value.encode()) > limit:
        raise Rejected(f"text of {len(value.encode())} bytes")
    return value


def number(value) -> float:
    if value.__class__ not in (int, float) or not math.isfinite(value):
        raise Rejected(f"bad number {str(value)[:40]!r}")
    return value


_CHAT = {"Said": ev.Said, "Acted": ev.Acted}
_CHAT_NAMES = ("Said", "Acted")  # a tuple: `in` on it takes unhashable values too


class Validator:
    """Events and records read back from Redis, checked as client input is. ``max_line``:
    this node's ``max_line_bytes`` (what a client may send)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._names: set[str] = set()  # valid names seen: the reader thread (start-up before it)
        # event class -> a check per field
        user, admin = self._user_text, self._admin_text
        self._rules = {
            ev.Said: (name, user), ev.Acted: (name, user), ev.Joined: (name, name),
            ev.Left: (name, name, self._reason), ev.Kicked: (name, admin),
            ev.Renamed: (name, name), ev.Announcement: (admin,),
            ev.PrivateMessage: (name, user),
        }

    def _user_text(self, value) -> str:
        return clean(value, self.max_line)

    @staticmethod
    def _admin_text(value) -> str:
        return clean(value, MAX_ADMIN_TEXT)

    @staticmethod
    def _reason(value):
        return None if value is None else clean(value, MAX_ADMIN_TEXT)

    def event(self, decoded):
        """An event from its decoded JSON list, each field checked; Rejected otherwise."""
        if decoded.__class__ is list and len(decoded) == 3 and decoded[0] in _CHAT_NAMES:
            cls, nick, said = _CHAT[decoded[0]], decoded[1], decoded[2]  # the common case
            if said.__class__ is str and said.isprintable() \
                    and len(said) <= self.max_line // 4 and self._is_name(nick):
                return cls(nick, said)
        return self._event(decoded)

    def _is_name(self, value) -> bool:
        """name()'s rule, remembered for the few nicks that say nearly every line (bounded)."""
        if value.__class__ is not str:
            return False
        if value in self._names:
            return True
        if not is_valid_name(value):
            return False
        if len(self._names) >= 4096:
            self._names.clear()
        self._names.add(value)
        return True

    def _event(self, decoded):
        try:
            event = wire.from_list(decoded)
        except wire.WireError as exc:
            raise Rejected(str(exc)) from None
        rules = self._rules[event.__class__]
        values = [getattr(event, f) for f in event.__slots__]
        checked = [check(v) for check, v in zip(rules, values)]
        return event if checked == values else event.__class__(*checked)

    def member(self, value: str) -> tuple:
        """A ``members`` record: (nick, room or None, peer, connected_at)."""
        try:
            nick, room, peer, connected_at = json.loads(value)
        except (ValueError, TypeError):
            raise Rejected("not a member record") from None
        if peer.__class__ is not str or len(peer) > MAX_PEER or not peer.isprintable():
            raise Rejected("bad peer")
        return name(nick), None if room is None else name(room), peer, number(connected_at)

    def history(self, value: str) -> tuple[float, str, object]:
        """A history list value ``TS ROOM EVENT`` -> (ts, room, Said or Acted)."""
        try:
            ts, room, encoded = value.split(" ", 2)
            ts, decoded = float(ts), json.loads(encoded)
        except (ValueError, TypeError):
            raise Rejected("not a history line") from None
        event = self.event(decoded)
        if event.__class__ not in (ev.Said, ev.Acted):
            raise Rejected("not a room line")
        return number(ts), name(room), event

    @staticmethod
    def lease(value: str) -> dict:
        """A node's lease record: {since, address, clients}."""
        try:
            info = json.loads(value)
            since, address, clients = info["since"], info["address"], info["clients"]
        except (ValueError, TypeError, KeyError):
            raise Rejected("not a lease") from None
        if address.__class__ is not str or len(address) > MAX_PEER or clients.__class__ is not int:
            raise Rejected("bad lease")
        return {"since": number(since), "address": sanitize(address), "clients": clients}

    @staticmethod
    def owner(value: str) -> tuple[str, int]:
        """A nick claim's or member key's ``node|client id``."""
        node, _, client_id = value.rpartition("|")
        if not client_id.isascii() or not client_id.isdigit() or len(client_id) > 18:
            raise Rejected("bad owner")
        return node_name(node), int(client_id)


def room_key(value) -> str:
    """A folded room name (history keys, purge)."""
    if value.__class__ is not str or not is_valid_name(value) or fold(value) != value:
        raise Rejected(f"bad room key {str(value)[:40]!r}")
    return value


class RejectLog:
    """``cluster_entry_rejected``: one warning per REJECT_LOG_SECONDS at most, counting what
    was dropped meanwhile, so a flood of junk cannot flood the log. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0
        self._dropped = 0
        self.total = 0

    def __call__(self, what: str, error: str, **fields) -> None:
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self._dropped += 1
            if now < self._next:
                return
            self._next, dropped, self._dropped = now + REJECT_LOG_SECONDS, self._dropped, 0
        log.warning("cluster_entry_rejected", what=what, error=error[:200], dropped=dropped,
                    **fields)


# -- routed admin actions: what their arguments may be ---------------------------------------


def _kick_args(args) -> dict:
    reason = args.get("reason") if isinstance(args, dict) else None
    return {"reason": None if reason is None else clean(reason, MAX_ADMIN_TEXT)}


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
    from chatd.bans import parse_network

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
    if not _epoch(created) or expires is not None and not _epoch(expires):
        raise Rejected("bad ban times")
    return {**_address_args(record), "reason": clean(record.get("reason", ""), MAX_ADMIN_TEXT),
            "created": created, "expires": expires}


def _epoch(value) -> bool:
    return value.__class__ in (int, float) and 0 <= value < 253402300800  # before year 9999


#: action -> (whose: "client" for one client (its id given), "all" for every node; the
#: arguments' check). What is not here is not obeyed.
COMMANDS = {
    "kick": ("client", _kick_args), "mute": ("client", _no_args), "unmute": ("client", _no_args),
    "ban": ("all", ban_record), "unban": ("all", _address_args), "purge": ("all", _room_args),
}
GATHERS = {"rows": _rows_args}

#: What a gathered ``rows`` answer may hold per client (admincmds._describe), and its size.
ROW_FIELDS = frozenset(("id", "nick", "peer", "ip", "room", "connected", "connected_at", "idle",
                        "bytes_in", "bytes_out", "lines_in", "lines_out", "sendq", "muted"))
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
