"""Token bucket for per-client flood control (pure: the caller passes the clock)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per line.

    ``take(now)`` spends a token and returns 0.0, or returns how many seconds until one is
    available without spending anything. The session sleeps that long while it keeps reading,
    which is how excess input gets *delayed* rather than dropped (docs/protocol.md §3).
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        tokens = self._tokens
        if tokens < self.burst:
            tokens = min(self.burst, tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate

    @property
    def tokens(self) -> float:
        """Tokens saved up at the last ``take`` (an upgrade carries them over)."""
        return self._tokens

    def restore(self, tokens: float, now: float) -> None:
        self._tokens, self._stamp = min(float(self.burst), max(0.0, tokens)), now
