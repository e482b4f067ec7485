"""Reconnect policy as pure parts: a delay generator and a "was that link healthy?" rule.

Full-jitter exponential backoff (AWS architecture blog, "Exponential backoff and jitter"):
the n-th delay is uniform in [0, min(cap, base * 2**n)]. The attempt counter is reset only
after a connection stayed up for `healthy_after` seconds, never merely at a handshake: a
server that accepts and then closes at once must see the delays grow, not a reconnect storm.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self,
        *,
        base: float = 1.0,
        cap: float = 60.0,
        healthy_after: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.healthy_after = healthy_after
        self.attempt = 0  # failures in a row since the last healthy period
        self._floor = 0.0  # a one-off minimum for the next delay (see hold_off)
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay (no jitter)."""
        return min(self.cap, self.base * (2 ** min(self.attempt, 32)))

    def next_delay(self) -> float:
        delay = max(self._floor, self._rng.uniform(0, self.ceiling()))
        self._floor = 0.0
        self.attempt += 1
        return delay

    def hold_off(self, seconds: float) -> None:
        """Make the next delay at least `seconds` (the provider asked us to go away for a while)."""
        self._floor = max(self._floor, seconds)

    def connection_ended(self, *, lasted: float) -> None:
        """Record how long the last connection stayed up; a healthy one resets the policy."""
        if lasted >= self.healthy_after:
            self.attempt = 0
