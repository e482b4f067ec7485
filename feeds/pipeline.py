"""Events from a feed: batch, dedupe and persist, then publish what was new.

Transports `submit()` each frame's events as one unit; a single task drains the queue in
batches of whole units, stores each batch in one transaction on a worker thread, then hands the
new events to the broadcast module. A unit is never split across batches: one StockTwits message
naming several symbols is several events, and a stream cursor committed with only some of them
would let a restart resume past the rest (feeds/store.py commits the cursor with the batch).

A batch is whatever is queued when the previous one is done, up to `max_batch` events (a first
unit always fits, however big). Under load the batches grow by themselves: everything that arrived
while one batch was being stored makes the next, so the fixed cost of a batch (a thread hop, a
transaction, a few queries, one publish round trip: about a millisecond) is shared by up to
`max_batch` events exactly when it matters. When events keep arriving less than `max_delay / 4`
apart (a moving average: faster than 200 a second), a batch also waits up to `max_delay` (20 ms)
for more: events that trickle in one at a time (Knowsis' Pusher thread hands them over singly)
otherwise made batches of one or two, and the fixed cost of each batch doubled the CPU per event.
At light load an event never waits: it is stored and published as soon as it arrives
(bench/wire_to_browser.py). `max_batch` bounds the memory, the transaction and the publish of one
batch.

A batch that fails to store is retried, not dropped. Before every attempt a broken database
connection is replaced (feeds/db.py). A lost connection or an unreachable database is retried
with backoff, `store_attempts` times in all; then `run()` raises `StoreUnavailable` and the
worker exits non-zero, for its supervisor to restart it: a resumable stream (StockTwits) then
resumes from the cursor committed with the last stored batch, so nothing is skipped. An error
that comes from the data (integrity, a bug) would fail again: the batch is stored one unit per
transaction, and only the units that still fail are dropped, logged and counted. While a batch
is failing the status sink shows the feed `degraded`; a stored batch clears it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from . import metrics
from .backoff import Backoff
from .broadcast import LayerUnavailable, publish_events
from .db import TRANSIENT_ERRORS, close_broken_connections
from .events import Event
from .lease import LeaseLost
from .logging import redact
from .store import events_store

__all__ = ["Pipeline", "StoreUnavailable"]

log = logging.getLogger(__name__)

Store = Callable[..., list[Event]]
Publish = Callable[[Iterable[Event]], Awaitable[int]]
Unit = list[Event]  # one frame's events: stored in one transaction, never split


class StoreUnavailable(RuntimeError):
    """The database stayed unreachable for every attempt to store a batch."""


class _Rejected(Exception):
    """Storing failed for a reason a retry cannot fix (the data, or a bug)."""


def _on_live_connection(store: Store) -> Store:
    def store_on_live_connection(**kwargs):
        # Here, not in the store: this runs on the thread that owns the connection.
        close_broken_connections()
        return store(**kwargs)

    return store_on_live_connection


class Pipeline:
    def __init__(
        self,
        *,
        store: Store = events_store,
        publish: Publish = publish_events,
        max_batch: int = 2000,
        max_delay: float = 0.02,
        max_queue: int = 20_000,
        sinks: list[str] | None = None,
        status=None,
        provider: str = "unknown",
        store_attempts: int = 12,
        retry_backoff: Callable[[], Backoff] = lambda: Backoff(base=0.25, cap=10.0),
    ) -> None:
        """`status`: a feeds.status.StatusSink told when storing fails and recovers.
        With the default retry policy a batch is tried for
        up to about a minute (about half that on average, the delays being jittered): a
        PostgreSQL restart or failover is ridden out, a longer outage ends the worker."""
        self._store = sync_to_async(_on_live_connection(store), thread_sensitive=True)
        self._publish = publish
        # Sinks see every new event after it is stored and may return derived events (e.g. fired
        # alert rules) to publish. Named by dotted path in settings: feeds never imports them.
        self._sinks = [sync_to_async(import_string(path), thread_sensitive=True)
                       for path in (sinks if sinks is not None else getattr(settings, "FEEDS_EVENT_SINKS", []))]
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.store_attempts = store_attempts
        self._retry_backoff = retry_backoff
        # Bounded (in events): if the database falls behind, the transport waits instead of
        # memory growing. The queue itself is not: a unit is let in whenever there is room, so
        # a frame bigger than the bound cannot wait for ever.
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Unit] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._held: Unit | None = None  # taken from the queue, but did not fit the last batch
        self._last_arrival = 0.0  # when the latest unit was submitted (monotonic)
        self._gap = 1.0  # seconds between units, a moving average (of the last ten or so)
        self._queued_events = 0
        self.stored = 0
        self.published = 0
        self.failed_batches = 0  # store attempts that raised
        self.dropped_units = 0
        self._status = status
        self._layer_trouble = False  # the last publish failed in the channel layer
        # Read when scraped, not set on every submit: exact, and free on the hot path.
        queued = weakref.ref(self)
        metrics.PIPELINE_QUEUE_DEPTH.labels(provider).set_function(
            lambda: pipeline._queued_events if (pipeline := queued()) is not None else 0)
        self._stored_total = metrics.EVENTS_STORED.labels(provider)
        self._store_failures = metrics.STORE_FAILURES.labels(provider)
        self._dropped_unstored = metrics.EVENTS_DROPPED.labels(provider, "store_failed")

    async def submit(self, events: Iterable[Event]) -> None:
        """Queue one frame's events as a unit: they are stored in the same transaction."""
        unit = list(events)
        if not unit:
            return
        while self._queued_events >= self.max_queue:
            self._room.clear()
            await self._room.wait()
        self._queue.put_nowait(unit)
        self._queued_events += len(unit)
        now = time.monotonic()
        self._gap += 0.1 * (min(now - self._last_arrival, 1.0) - self._gap)  # a moving average
        self._last_arrival = now

    def _take(self, units: list[Unit], size: int, unit: Unit) -> int:
        """Add `unit` to the batch if it fits (a first unit always does); else hold it for the
        next batch. Returns the new batch size, or -1 when the batch is full."""
        if units and size + len(unit) > self.max_batch:
            self._held = unit
            return -1
        units.append(unit)
        return size + len(unit)

    def _first_unit(self) -> Unit | None:
        unit, self._held = self._held, None
        return unit

    async def _next_batch(self) -> list[Unit]:
        units: list[Unit] = []
        size = self._take(units, 0, self._first_unit() or await self._queue.get())
        loop = asyncio.get_running_loop()
        # Only a busy pipeline waits for more: one whose events keep arriving less than a quarter
        # of `max_delay` apart (a stream). At light load, small bursts included, an event goes at
        # once; what is queued already is taken anyway.
        busy = self._gap < self.max_delay / 4
        deadline = loop.time() + (self.max_delay if busy else 0.0)
        while 0 <= size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    unit = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                unit = self._queue.get_nowait()
            size = self._take(units, size, unit)
        return units

    async def wait_idle(self) -> None:
        """Return once everything submitted so far has been stored (or failed to store)."""
        await self._queue.join()

    async def process(self, units: list[Unit]) -> None:
        try:
            await self._process(units)
        finally:
            for unit in units:
                self._queued_events -= len(unit)
                self._queue.task_done()
            if self._queued_events < self.max_queue:
                self._room.set()

    async def _process(self, units: list[Unit]) -> None:
        # The database is the source of truth: what is not stored is not published.
        try:
            new = await self._store_retrying([event for unit in units for event in unit])
        except _Rejected:
            new = await self._store_one_by_one(units) if len(units) > 1 else self._drop(units[0])
        self.stored += len(new)
        self._stored_total.inc(len(new))
        # Published before the sinks run: browsers get market data without waiting for rule
        # evaluation (a query or more per batch); what the sinks derive (stored by them) follows.
        await self._publish_stored(new)
        seen, derived = new, []
        for sink in self._sinks:
            try:
                more = await sink(events=seen)
            except Exception:  # a rule evaluation bug must not stop market data
                log.exception("event sink failed on %d events", len(seen))
                continue
            seen, derived = [*seen, *more], [*derived, *more]
        if derived:
            await self._publish_stored(derived)

    async def _publish_stored(self, new: list[Event]) -> None:
        # Bounded and logged once per outage by the broadcast module; stored events are never
        # lost by a failed publish: reconnecting browsers fetch them from the snapshot.
        try:
            self.published += await self._publish(new)
        except LayerUnavailable as exc:
            if self._status is not None and not self._layer_trouble:
                self._status.detail("channel_layer", f"unavailable: {exc}"[:300])  # shown in FeedStatus.details
            self._layer_trouble = True
            return
        except Exception:
            log.exception("could not publish %d stored events (browsers resync from the database)", len(new))
            return
        if self._layer_trouble and self._status is not None:
            self._status.detail("channel_layer", "ok")
        self._layer_trouble = False

    async def _store_retrying(self, events: list[Event]) -> list[Event]:
        """Store `events` in one transaction; retry while the database is unreachable.

        Raises:
            LeaseLost: this worker no longer holds the lease (the runner stands it by).
            _Rejected: the error came from the events or the code; a retry would fail again.
            StoreUnavailable: every attempt failed to reach the database.
        """
        backoff, attempt = self._retry_backoff(), 0
        while True:
            attempt += 1
            try:
                new = await self._store(events=events)
                break
            except LeaseLost:
                raise  # another worker consumes now: store nothing more, retry nothing
            except Exception as exc:
                self.failed_batches += 1
                self._store_failures.inc()
                error = redact(f"{type(exc).__name__}: {exc}")
                if self._status is not None:
                    await self._status.store_failed(f"store failed: {error}"[:500])
                if not isinstance(exc, TRANSIENT_ERRORS):
                    raise _Rejected from exc
                if attempt >= self.store_attempts:
                    raise StoreUnavailable(f"could not store {len(events)} events in {attempt} attempts") from exc
                delay = backoff.next_delay()
                log.warning("could not store %d events (attempt %d of %d: %s); retrying in %.2fs",
                            len(events), attempt, self.store_attempts, error, delay)
                await asyncio.sleep(delay)
        if self._status is not None:
            await self._status.store_succeeded()
        return new

    async def _store_one_by_one(self, units: list[Unit]) -> list[Event]:
        """One transaction per unit, so a unit that cannot be stored costs only itself."""
        new: list[Event] = []
        for unit in units:
            try:
                new.extend(await self._store_retrying(unit))
            except _Rejected:
                self._drop(unit)
        return new

    def _drop(self, unit: Unit) -> list[Event]:
        self.dropped_units += 1
        self._dropped_unstored.inc(len(unit))
        log.error("could not store a unit of %d events (%s); dropped", len(unit), unit[0].kind,
                  exc_info=True)  # called while handling _Rejected: its cause is the store's error
        return []

    async def run(self) -> None:
        """Store batches until cancelled. Raises StoreUnavailable when the database stayed out
        of reach; what is still queued then is not stored (nor, for a stream, its cursor)."""
        while True:
            await self.process(await self._next_batch())
