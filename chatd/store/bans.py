"""Address bans: checked at every accept, changed by admin commands, kept across restarts.

The bans file is JSON in the state directory. It is replaced atomically (temporary file in the
same directory, fsync, rename, fsync of the directory), so a crash or a full disk leaves either
the old file or the new one, never half of one. It is written 0600 in a directory created 0700,
whatever the umask (files.py): who is banned, and why, is for the operator. A file that cannot be read or parsed at start is
an error the operator must see: chatd refuses to start and leaves the file untouched, rather than
starting with no bans (which would silently let every banned address back in).

Threads: the accept thread calls :meth:`BanList.match` on every connection, without a lock: it
reads ``_bans``, a tuple that writers replace whole. Admin threads change bans under ``_lock``,
which also serialises writes of the file. ``_lock`` is independent of the hub lock (never held
together).
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from chatd import files
from chatd.core.events import Banned
from chatd.text import sanitize

FILE_NAME = "bans.json"
FORMAT_VERSION = 1


class BanFileError(Exception):
    """The bans file exists but cannot be used; the message is one line for the operator."""


def parse_network(address: str):
    """``"192.0.2.7"`` -> 192.0.2.7/32, ``"10.1.2.3/8"`` -> 10.0.0.0/8. Raises ValueError."""
    return ipaddress.ip_network(address.strip(), strict=False)


def parse_ip(ip: str):
    """A peer address; an IPv4-mapped IPv6 peer (dual-stack listener) counts as its IPv4."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def covers(network, ip: str) -> bool:
    """Whether peer address ``ip`` lies in ``network`` (False for an unparsable address)."""
    try:
        addr = parse_ip(ip)
    except ValueError:
        return False
    return addr.version == network.version and addr in network


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Ban:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    reason: str
    created: float
    expires: float | None  # epoch seconds; None = until unbanned

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def notice(self) -> Banned:
        """What a client refused or ended by this ban is told (docs/protocol.md §2)."""
        until = None
        if self.expires is not None:
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))
        return Banned(sanitize(self.reason or "").strip(), until)

    def as_dict(self) -> dict:
        return {"address": str(self.network), "reason": self.reason,
                "created": iso(self.created), "expires": iso(self.expires)}

    def as_record(self) -> dict:
        return {"address": str(self.network), "reason": self.reason,
                "created": self.created, "expires": self.expires}


class BanList:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, FILE_NAME)
        self._bans: tuple[Ban, ...] = ()
        self._lock = threading.Lock()

    def load(self) -> int:
        """Read the file (a missing one means no bans). Raises BanFileError."""
        try:
            with open(self.path, "rb") as fh:
                document = json.load(fh)
            self._bans = tuple(_ban_from_record(r) for r in document["bans"])
        except FileNotFoundError:
            self._bans = ()
        except OSError as exc:
            raise BanFileError(f"cannot read bans file {self.path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BanFileError(f"bans file {self.path} is corrupt ({exc}); "
                               "fix or move it away, chatd leaves it untouched") from None
        return len(self._bans)

    def records(self) -> list[dict]:
        return [ban.as_record() for ban in self.active()]

    def replace(self, records: list[dict]) -> None:
        """Enforce exactly ``records`` (cluster mode: what the cluster holds) and save them
        here too. Raises BanFileError on a record that makes no sense."""
        try:
            bans = tuple(_ban_from_record(r) for r in records)
        except (ValueError, KeyError, TypeError) as exc:
            raise BanFileError(f"the cluster's bans are corrupt ({exc})") from None
        with self._lock:
            self._bans = bans
            self._save()

    def apply(self, record: dict) -> Ban:
        """Another node's new ban: in force here at once (and saved here as a cache)."""
        ban = _ban_from_record(record)
        with self._lock:
            self._bans = (*[b for b in self._bans if b.network != ban.network], ban)
            self._save()
        return ban

    def lift(self, address: str) -> None:
        """Another node's unban."""
        network = parse_network(address)
        with self._lock:
            self._bans = tuple(b for b in self._bans if b.network != network)
            self._save()

    def match(self, ip: str) -> Ban | None:
        bans = self._bans
        if not bans:
            return None
        now = time.time()
        for ban in bans:
            if covers(ban.network, ip) and ban.active(now):
                return ban
        return None

    def active(self) -> list[Ban]:
        now = time.time()
        return [ban for ban in self._bans if ban.active(now)]

    def add(self, network, reason: str, duration: float | None) -> tuple[Ban, OSError | None]:
        """Ban ``network`` (replacing an earlier ban of the same network) and save.

        The ban is in force even if saving fails; the OSError is returned so the caller can
        say it will not survive a restart.
        """
        now = time.time()
        ban = Ban(network, reason, now, now + duration if duration else None)
        with self._lock:
            kept = [b for b in self._bans if b.network != network and b.active(now)]
            self._bans = (*kept, ban)
            return ban, self._save()

    def remove(self, network) -> tuple[Ban | None, OSError | None]:
        with self._lock:
            found = [b for b in self._bans if b.network == network]
            if not found:
                return None, None
            self._bans = tuple(b for b in self._bans if b.network != network)
            return found[0], self._save()

    def _save(self) -> OSError | None:
        """Write the file atomically; ``_lock`` held. Returns the error instead of raising."""
        document = {"version": FORMAT_VERSION, "bans": [b.as_record() for b in self.active()]}
        directory = os.path.dirname(self.path)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            files.makedirs(directory, files.STATE_DIR_MODE)
            with _create_private(tmp) as fh:
                json.dump(document, fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return exc
        return None


def _create_private(path: str):
    """``path`` opened for writing text, created 0600 whatever the umask: it lists who is
    banned and why, which is for the operator only (chatctl shows it to admins). A leftover
    temporary file of the same name (a crashed chatd with our pid) is truncated and its mode
    set again, since O_CREAT applies the mode only to a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, files.STATE_FILE_MODE)
    try:
        os.fchmod(fd, files.STATE_FILE_MODE)
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _ban_from_record(record: dict) -> Ban:
    expires = record["expires"]
    if expires is not None and not _is_time(expires):
        raise TypeError(f"bad expiry {expires!r}")
    if not _is_time(record["created"]):
        raise TypeError(f"bad creation time {record['created']!r}")
    return Ban(parse_network(record["address"]), str(record.get("reason", "")),
               float(record["created"]), float(expires) if expires is not None else None)


def _is_time(value) -> bool:
    """An epoch time that iso() can print (a finite number before the year 9999)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 253402300800
