"""A hot standby: the feed runs, connected and subscribed, before its worker holds the lease.

A provider without resume (StockNews, InsightSentry, Knowsis) sends what happens while nobody
is connected to nobody. So a standby worker of such a provider keeps its own connection and
holds what arrives, for a bounded window, in a `Handover`; when it takes the lease over it
hands that window to the pipeline first, then everything live. The store keeps rows by their
natural key (news, alerts, sentiment samples: ON CONFLICT DO NOTHING, feeds/store.py) and
publishes only what was new, so what the previous holder already stored is neither stored nor
broadcast twice, and what it missed between its last commit and its death is not lost.
Quotes and bars are state, not events: replaying the window re-sends values the previous holder
may have sent, ending on the latest (the row and the browser end the same).

Until the takeover the feed reports to a `MemoryStatus` (the holder owns the FeedStatus row);
`StatusSwitch` lets the feed and its transport keep the one status object they were given.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from .events import Event
from .status import MemoryStatus

__all__ = ["Handover", "StatusSwitch"]


class Handover:
    """What a feed submits to: a bounded buffer until `take_over(pipeline)`, then the pipeline."""

    def __init__(self, *, window_seconds: float = 30.0, max_events: int = 50_000, clock=time.monotonic) -> None:
        self.window_seconds = window_seconds
        self.max_events = max_events
        self._clock = clock
        self._buffer: deque[tuple[float, list[Event]]] = deque()
        self._buffered = 0
        self._target = None

    async def submit(self, events: Iterable[Event]) -> None:
        if self._target is not None:
            return await self._target.submit(events)
        unit = list(events)
        if not unit:
            return
        now = self._clock()
        self._buffer.append((now, unit))
        self._buffered += len(unit)
        while self._buffer and (self._buffer[0][0] < now - self.window_seconds or self._buffered > self.max_events):
            _, old = self._buffer.popleft()
            self._buffered -= len(old)

    async def take_over(self, pipeline) -> int:
        """Submit the window to `pipeline`, in arrival order, then send everything there.
        Returns how many events were handed over."""
        handed = 0
        # Units that arrive while a submit waits for room join the buffer and are taken here too;
        # the target is set only once it is empty, with no await in between: nothing overtakes.
        while self._buffer:
            _, unit = self._buffer.popleft()
            self._buffered -= len(unit)
            handed += len(unit)
            await pipeline.submit(unit)
        self._target = pipeline
        return handed


class StatusSwitch:
    """A status sink that forwards to a MemoryStatus until `switch(reporter)`."""

    def __init__(self, standby: MemoryStatus) -> None:
        self._target = standby

    def __getattr__(self, name):
        return getattr(self._target, name)

    async def switch(self, reporter) -> None:
        """Report to `reporter` from now on, starting from the link state the feed is in."""
        standby, self._target = self._target, reporter
        # What the link received while standing by counts as received by this worker (the
        # previous holder counted some of the same frames: after a takeover the count may run
        # ahead of the provider's by the standby's overlap).
        reporter.messages += standby.messages
        reporter.parse_errors += standby.parse_errors
        reporter.reconnects += standby.reconnects
        for key, value in standby.details.items():
            reporter.detail(key, value)
        await reporter.set_state(standby.link_state, error=standby.last_error)
