"""Rate-limit a log line that a misbehaving provider could repeat without end.

A feed skips and counts a frame it cannot parse (FeedStatus.parse_errors); logging every one
with its payload would let a burst of bad frames flood the logs. `LogThrottle` lets the first
`burst` lines of each `window` through, says once that it is holding lines back, and reports how
many it held in one summary line, written with the first line of a later window (or by `flush()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["LogThrottle", "throttle_for"]


class LogThrottle:
    def __init__(self, *, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()  # the Pusher bridge may log from pysher's thread
        self._started = float("-inf")
        self._logged = 0
        self.suppressed = 0

    def log(self, logger: logging.Logger, level: int, msg: str, *args: object) -> bool:
        """Log `msg % args` unless this window's burst is spent; True if it was written."""
        with self._lock:
            now = self._clock()
            held = 0
            if now - self._started >= self.window:
                held, self.suppressed = self.suppressed, 0
                self._started, self._logged = now, 0
            allowed = self._logged < self.burst
            if allowed:
                self._logged += 1
            else:
                self.suppressed += 1
            first_held = self.suppressed == 1
        if held:
            logger.log(level, "%d more lines like the next one were not logged in the last %.0fs", held, self.window)
        if allowed:
            logger.log(level, msg, *args, stacklevel=2)  # the caller's file and line, not ours
        elif first_held:  # say so at once, so a reader knows the log is not the whole story
            logger.log(level, "rate-limited: more lines like the above are counted, not logged, for up to %.0fs",
                       self.window)
        return allowed

    def flush(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        """Report what is held back now (e.g. when a feed stops)."""
        with self._lock:
            held, self.suppressed = self.suppressed, 0
        if held:
            logger.log(level, "%d more lines like the above were not logged in the last %.0fs", held, self.window)


_throttles: dict[str, LogThrottle] = {}
_registry_lock = threading.Lock()


def throttle_for(name: str) -> LogThrottle:
    """One shared throttle per name (e.g. per provider's "skipped a frame" line)."""
    with _registry_lock:
        return _throttles.setdefault(name, LogThrottle())
