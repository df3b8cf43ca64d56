"""The trust boundary: what chatd writes to Redis is sealed here, and what it reads back is
opened here (then checked by checks.py) before anything else in chatd sees it.

Whoever can write to Redis must not own the cluster (docs/security.md). So every value a node
trusts carries a tag made with the cluster secret (secret.py): HMAC-SHA256, truncated to 128
bits (:meth:`Seal.tag` says how it is made cheap enough per line). The tag is bound to where
the value lives (its
key, or the hash field it sits in): a value copied to another key, or a stream entry with one
byte changed, fails the check. A tag is the first :data:`TAG_LENGTH` characters of the value
(128 bits, hex); what follows is the payload. The tag is deterministic, so a sealed nick claim
compares equal in a Lua script (the release is "delete if still ours").

Stream entries (field ``h``: ``WRITER LOST SEQ TAG``, the lost node empty but in a reaped
node's departures; field ``c``: the batch) also carry a sequence number that grows per writer (:class:`Sequence`): a
reader refuses an entry whose sequence is not above the last it took from that writer, and,
from a writer it has not heard yet, one older than its own start (less :data:`CLOCK_SKEW`),
so an entry copied back into the stream (a replay) is refused too.

A tag proves a node wrote the value, not that the value is sane: checks.py validates every
line and record as client input is. What fails either raises :class:`Rejected`; the caller
drops it with one rate-limited ``cluster_entry_rejected`` warning (:class:`RejectLog`).

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
import os
import threading
import time

import structlog

log = structlog.get_logger("chatd.cluster")

TAG_LENGTH = 32
#: The largest batch a reader decodes (a node writes at most WRITE_ENTRY_BYTES per entry).
MAX_ENTRY_BYTES = 4 * 1024 * 1024
WRITE_ENTRY_BYTES = 1024 * 1024
#: Lines in one entry: a node writes far fewer (what queues in 1 ms, or a reassert).
MAX_ENTRY_LINES = 100_000
#: The tag context of an entry of the shared stream (``chatd:events``), as nodes of the version
#: before per-node streams made it; a node's own stream's entries are bound to its key.
SHARED = b"stream"
#: How far another node's clock may lag ours and its first entries still be taken.
CLOCK_SKEW = 60.0
#: One ``cluster_entry_rejected`` warning per this many seconds, with the count since the last.
REJECT_LOG_SECONDS = 10.0

class Rejected(ValueError):
    """A value from Redis that this node does not take (its tag, shape or content)."""


class Seal:
    """Tags made and checked with the cluster secret. Thread-safe: no state but the key."""

    def __init__(self, secret: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        # HMAC-SHA256 (RFC 2104) with its two padded key blocks hashed once, here: a tag then
        # costs two copies of a hash state, not two key schedules (0.7 us for 100 bytes,
        # hmac.digest 1.6 us; 6.4 us for a 9 KB batch, where keyed BLAKE2b takes 10.9 us)
        block = hashlib.sha256(b"chatd cluster\n" + secret).digest().ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._aead = AESGCM(hashlib.sha256(b"chatd cluster encryption\n" + secret).digest())

    def tag(self, context: bytes, payload: bytes) -> str:
        """HMAC-SHA256 of ``context``, LF, ``payload``, truncated to 128 bits (RFC 2104 §5)."""
        inner = self._inner.copy()
        inner.update(context + b"\n" + payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16].hex()

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

    def entry(self, writer: str, seq: int, body: str, lost: str = "",
               stream: bytes = SHARED) -> dict:
        """The fields of one stream entry carrying ``body`` (a batch of lines, JSON text):
        ``h``, the head ``WRITER LOST SEQ TAG`` (node names have no spaces; LOST may be
        empty), and ``c``, the body. Two fields, not five: each costs every node and Redis
        per entry, and at a paced load an entry is a line or two. The tag is bound to the
        stream it goes in (``stream``: a node's own stream's key, or :data:`SHARED`), so an
        entry copied into another stream fails it."""
        n = str(seq)
        tag = self.tag(_entry_context(writer.encode(), lost.encode(), n.encode(), stream),
                       body.encode())
        return {"h": f"{writer} {lost} {n} {tag}", "c": body}

    def open_entry(self, fields: dict, stream: bytes = SHARED) -> tuple[str, str, int, list]:
        """A stream entry read back from ``stream`` -> (writer, lost node or "", sequence,
        lines): the tag checked before the batch is parsed. (Per entry, on the reader's hot
        path at a paced load: no more than the check needs.)"""
        try:
            writer, lost, n, tag = fields[b"h"].split(b" ")
            body = fields[b"c"]
        except KeyError as exc:
            raise Rejected(f"no field {exc.args[0]!r}") from None
        except ValueError:
            raise Rejected("bad head") from None
        if len(body) > MAX_ENTRY_BYTES:
            raise Rejected(f"entry of {len(body)} bytes")
        if not hmac.compare_digest(tag, self.tag(_entry_context(writer, lost, n, stream),
                                                 body).encode()):
            raise Rejected("bad tag")
        try:
            lines = json.loads(body.decode())
            names = writer.decode(), lost.decode()
        except (ValueError, UnicodeDecodeError):  # (a tagged entry is a node's: no such)
            raise Rejected("batch is not JSON") from None
        if lines.__class__ is not list or len(lines) > MAX_ENTRY_LINES:
            raise Rejected("batch is not a list of lines")
        if not n.isdigit() or len(n) > 20:
            raise Rejected("bad sequence")
        return names[0], names[1], int(n), lines


def _entry_context(writer: bytes, lost: bytes, n: bytes, stream: bytes) -> bytes:
    return stream + b"\n" + writer + b"\n" + lost + b"\n" + n


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
    """The last sequence taken from each writer in each stream (the reader thread alone): a
    writer numbers its entries across streams, so in one stream they grow but skip."""

    def __init__(self, started_at: float) -> None:
        self._floor = int((started_at - CLOCK_SKEW) * 1_000_000)
        self._last: dict[tuple[str, bytes], int] = {}

    def check(self, writer: str, seq: int, stream: bytes = SHARED) -> None:
        key = (writer, stream)
        last = self._last.get(key, self._floor)
        if seq <= last:
            raise Rejected(f"replayed entry (sequence {seq} <= {last})")
        if len(self._last) >= 4096 and key not in self._last:  # tagged writers: nodes
            self._last.clear()
        self._last[key] = seq


def shown(value, limit: int = 64) -> str:
    """A value read from Redis as a log line may show it: undecodable bytes replaced, short."""
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value))[:limit]


def text(value) -> str:
    """Bytes from Redis as text; Rejected for what is not UTF-8."""
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise Rejected("not UTF-8") from None


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
