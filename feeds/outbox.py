"""Client-message budget for a provider connection (sans-I/O: the caller supplies the clock).

Some providers drop or ban a client that sends too much (StockNews: 10 subscribe, 20 ping,
30 messages in all per minute per connection). The outbox holds at most one pending frame per
kind — a newer subscribe *replaces* an unsent one, so a burst of watchlist edits becomes a
single message — and releases a frame only when every sliding window still has room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

__all__ = ["SlidingWindow", "Outbox", "TOTAL"]

TOTAL = "*"


class SlidingWindow:
    """At most `limit` events in any `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event is allowed (0 when allowed now)."""
        self._expire(now)
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    def record(self, now: float) -> None:
        self._times.append(now)

    def try_record(self, now: float) -> bool:
        """Record one event if the window has room; say whether it had."""
        if self.wait_time(now) > 0:
            return False
        self.record(now)
        return True


class Outbox:
    """Pending frames by kind, released within per-kind and total limits.

    Args:
        limits: messages allowed per window, by kind; the key `TOTAL` limits all kinds together.
        window: window length in seconds. Use a little more than the provider's minute so
            network jitter cannot squeeze two of our windows into one of theirs.
        priority: order in which pending kinds are released.
    """

    def __init__(self, limits: Mapping[str, int], *, window: float = 61.0, priority: tuple[str, ...] = ()) -> None:
        self._limits = dict(limits)
        self._window = window
        self._priority = priority
        self._pending: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        """Start a new connection's budget (limits are per connection). Pending frames stay."""
        self._windows = {kind: SlidingWindow(limit, self._window) for kind, limit in self._limits.items()}

    def offer(self, kind: str, frame: str) -> None:
        """Queue `frame`, replacing any unsent frame of the same kind."""
        self._pending[kind] = frame

    def discard(self, kind: str) -> None:
        self._pending.pop(kind, None)

    def pending(self, kind: str) -> str | None:
        return self._pending.get(kind)

    def _wait_for(self, kind: str, now: float) -> float:
        waits = [self._windows[k].wait_time(now) for k in (kind, TOTAL) if k in self._windows]
        return max(waits, default=0.0)

    def _ordered(self) -> list[str]:
        first = [k for k in self._priority if k in self._pending]
        return first + [k for k in self._pending if k not in first]

    def take(self, now: float) -> tuple[str | None, float | None]:
        """Release the next frame allowed at `now`.

        Returns:
            `(frame, None)` when a frame may be sent now (it is recorded as sent);
            `(None, seconds)` when something is pending but must wait that long;
            `(None, None)` when nothing is pending.
        """
        shortest: float | None = None
        for kind in self._ordered():
            wait = self._wait_for(kind, now)
            if wait <= 0:
                frame = self._pending.pop(kind)
                for k in (kind, TOTAL):
                    if k in self._windows:
                        self._windows[k].record(now)
                return frame, None
            shortest = wait if shortest is None else min(shortest, wait)
        return None, shortest
