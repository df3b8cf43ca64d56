"""Login attempts slowed per address and per account, and ``login_failed`` lines throttled.

SPEC §12: at most 5 attempts a minute from one address, and 5 a minute at one account; the
rest are answered ``too many login attempts, wait N s`` without a verification (which is
what costs: tens of milliseconds of CPU each). Every attempt counts, right or wrong, so a
guesser gains nothing by mixing in a password it knows. An IPv6 address counts by its /64,
which one host usually holds whole.

Bounded (docs/protocol.md §3): :class:`Window` keeps at most ``max_keys`` keys, the least
recently used dropped first; a key holds at most ``limit`` times. A dropped key starts afresh,
so the bound is generous (50,000 keys, about 10 MiB) and an attacker filling it needs that
many addresses or names within a minute.

Pure but for the lock: the caller passes the clock. One lock a window, a leaf, held for a
dictionary update.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque

from chatd.store.bans import parse_ip

ATTEMPTS_PER_MINUTE = 5
WINDOW_SECONDS = 60.0
MAX_KEYS = 50_000
#: ``login_failed`` is logged at most once per address per this many seconds, with a count.
LOG_EVERY_SECONDS = 10.0


def address_key(ip: str) -> str:
    """The key an address's attempts count under: itself, or its /64 for IPv6."""
    try:
        addr = parse_ip(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class Window:
    """At most ``limit`` attempts per key in any ``seconds``; thread-safe."""

    def __init__(self, limit: int = ATTEMPTS_PER_MINUTE, seconds: float = WINDOW_SECONDS,
                 max_keys: int = MAX_KEYS) -> None:
        self.limit = limit
        self.seconds = seconds
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._times: OrderedDict[str, deque] = OrderedDict()  # key -> attempt times, oldest first

    def wait(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds until every one of ``keys`` may try again (0: now); nothing is counted."""
        with self._lock:
            return max((self._wait(key, now) for key in keys), default=0.0)

    def count(self, keys: tuple[str, ...], now: float) -> None:
        """One attempt at each of ``keys``."""
        with self._lock:
            for key in keys:
                times = self._times.pop(key, None)
                if times is None:
                    times = deque(maxlen=self.limit)
                times.append(now)
                self._times[key] = times  # now the most recently used
            while len(self._times) > self.max_keys:
                self._times.popitem(last=False)

    def _wait(self, key: str, now: float) -> float:
        times = self._times.get(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.seconds - now)

    def __len__(self) -> int:
        return len(self._times)


class FailureLog:
    """Whether a ``login_failed`` line is due for an address, and how many it stands for:
    one line per address per :data:`LOG_EVERY_SECONDS`, so a brute force cannot fill the log."""

    def __init__(self, every: float = LOG_EVERY_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self.every = every
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._state: OrderedDict[str, list] = OrderedDict()  # address -> [last logged, unlogged]

    def due(self, address: str, now: float) -> int:
        """The failures to report now (this one and those not yet logged), or 0: not yet."""
        with self._lock:
            state = self._state.pop(address, None) or [float("-inf"), 0]
            state[1] += 1
            count = 0
            if now - state[0] >= self.every:
                count, state[0], state[1] = state[1], now, 0
            self._state[address] = state
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return count
