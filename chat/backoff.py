"""When to try a lost connection again: exponential backoff with jitter (pure; no clock).

0.5 s, doubling up to 30 s, each delay moved by up to a fifth either way so that the clients
a restarting server dropped all at once do not come back all at once. A connection that
lasted (``stable_after`` seconds) starts the series again: a server that drops us once a day
should not make us wait 30 s; one that drops us right after the greeting should.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The caller asks :meth:`next_delay` before each attempt and tells :meth:`connected`
    how long each connection lasted."""

    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2
    stable_after: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts as one more failure."""
        base = min(self.cap, self.initial * 2 ** min(self.failures, 32))
        self.failures += 1
        spread = base * self.jitter
        return round(min(self.cap, max(0.0, base + self.rng.uniform(-spread, spread))), 1)

    def connected(self, lasted: float) -> None:
        """A connection was made and has now ended after ``lasted`` seconds."""
        if lasted >= self.stable_after:
            self.failures = 0
