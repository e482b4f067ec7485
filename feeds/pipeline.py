"""Events from a feed: batch, dedupe and persist, then publish what was new.

Transports `submit()` events as they parse them; a single task drains the queue in batches
(up to `max_batch` events or `max_delay` seconds, whichever comes first), stores each batch in
one transaction on a worker thread, then hands the new events to the broadcast module.
A batch that fails to store is dropped (without a stored copy nothing is published), logged,
counted (feeds/metrics.py) and reported to the status sink, which shows the feed `degraded`
until a batch is stored again: a failing database is never silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from . import metrics
from .broadcast import publish_events
from .events import Event
from .logging import redact
from .store import events_store

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

Store = Callable[..., list[Event]]
Publish = Callable[[Iterable[Event]], Awaitable[int]]


class Pipeline:
    def __init__(
        self,
        *,
        store: Store = events_store,
        publish: Publish = publish_events,
        max_batch: int = 500,
        max_delay: float = 0.05,
        max_queue: int = 20_000,
        sinks: list[str] | None = None,
        status=None,
        provider: str = "unknown",
    ) -> None:
        """`status`: a feeds.status.StatusSink told when storing fails and recovers."""
        self._store = sync_to_async(store, thread_sensitive=True)
        self._publish = publish
        # Sinks see every new event after it is stored and may return derived events (e.g. fired
        # alert rules) to publish. Named by dotted path in settings: feeds never imports them.
        self._sinks = [sync_to_async(import_string(path), thread_sensitive=True)
                       for path in (sinks if sinks is not None else getattr(settings, "FEEDS_EVENT_SINKS", []))]
        self.max_batch = max_batch
        self.max_delay = max_delay
        # Bounded: if the database falls behind, the transport waits instead of memory growing.
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue)
        self.stored = 0
        self.published = 0
        self.failed_batches = 0
        self._status = status
        self._depth = metrics.PIPELINE_QUEUE_DEPTH.labels(provider)
        self._stored_total = metrics.EVENTS_STORED.labels(provider)
        self._store_failures = metrics.STORE_FAILURES.labels(provider)
        self._dropped_unstored = metrics.EVENTS_DROPPED.labels(provider, "store_failed")

    async def submit(self, events: Iterable[Event]) -> None:
        for event in events:
            await self._queue.put(event)
        self._depth.set(self._queue.qsize())

    async def _next_batch(self) -> list[Event]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        self._depth.set(self._queue.qsize())
        return batch

    async def wait_idle(self) -> None:
        """Return once everything submitted so far has been stored (or failed to store)."""
        await self._queue.join()

    async def process(self, batch: list[Event]) -> None:
        try:
            await self._process(batch)
        finally:
            for _ in batch:
                self._queue.task_done()

    async def _process(self, batch: list[Event]) -> None:
        try:
            new = await self._store(events=batch)
        except Exception as exc:
            # The database is the source of truth: without a stored copy we do not publish.
            self.failed_batches += 1
            self._store_failures.inc()
            self._dropped_unstored.inc(len(batch))
            log.exception("could not store a batch of %d events; dropped", len(batch))
            if self._status is not None:
                await self._status.store_failed(redact(f"store failed: {type(exc).__name__}: {exc}")[:500])
            return
        self.stored += len(new)
        self._stored_total.inc(len(new))
        if self._status is not None:
            await self._status.store_succeeded()
        for sink in self._sinks:
            try:
                new = [*new, *await sink(events=new)]
            except Exception:  # a rule evaluation bug must not stop market data
                log.exception("event sink failed on %d events", len(new))
        try:
            self.published += await self._publish(new)
        except Exception:
            log.exception("could not publish %d stored events (browsers resync from the database)", len(new))

    async def run(self) -> None:
        while True:
            await self.process(await self._next_batch())

    async def drain(self) -> None:
        """Process everything already submitted (used on shutdown)."""
        while not self._queue.empty():
            batch = [self._queue.get_nowait() for _ in range(min(self.max_batch, self._queue.qsize()))]
            self._depth.set(self._queue.qsize())
            await self.process(batch)
