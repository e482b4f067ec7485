"""Run one provider's feed until told to stop: the body of `manage.py runfeed <provider>`.

Wires the pieces together: the account from the database, a status reporter, the pipeline,
the provider's feed, and a poller that follows which instruments are watched. Feeds know
nothing of teams: `settings.FEEDS_WATCHED_INSTRUMENTS` names the selector that says which
instruments are watched. Watchlist changes are picked up by polling (a few seconds): it works
across processes and machines, and a missed notification can never leave a feed stale.

Every database call here goes through feeds/db.py's `live_connection`, so a PostgreSQL restart
or a terminated backend costs one failed call, not a worker stuck on a dead connection. If the
pipeline cannot reach the database for all its attempts, the worker exits with code 1: its
supervisor restarts it, and a resumable stream resumes from the cursor stored with its data.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from . import metrics
from .db import live_connection
from .lease import Lease, LeaseLost
from .models import FeedStatus, Instrument, ProviderAccount
from .pipeline import Pipeline, StoreUnavailable
from .providers import FEEDS
from .retention import retention_loop
from .standby import Handover, StatusSwitch
from .status import FeedStatusReporter, MemoryStatus
from .store import events_store

__all__ = ["run_feed", "watched_codes", "UnknownProvider"]

log = logging.getLogger(__name__)

# The provider refused us for a reason a restart cannot fix: the worker exits with code 3.
REFUSAL_STATES = ("auth_failed", "refused")
# On a stop, how long the pipeline may take to store what was already received (systemd's
# TimeoutStopSec is 20 s). Past it the rest is not stored, and neither is a cursor beyond it.
DRAIN_SECONDS = 10.0


class UnknownProvider(LookupError):
    pass


def watched_codes(*, provider: str) -> set[str]:
    """The provider codes of every watched instrument that has one."""
    ids = import_string(settings.FEEDS_WATCHED_INSTRUMENTS)()
    codes = (instrument.code_for(provider) for instrument in Instrument.objects.filter(id__in=ids))
    return {code for code in codes if code}


def _load(provider: str) -> tuple[ProviderAccount | None, FeedStatus | None]:
    account = ProviderAccount.objects.filter(provider=provider).first()
    status = FeedStatus.objects.filter(account=account).first() if account else None
    return account, status


async def _follow_watchlists(feed, provider: str, interval: float) -> None:
    while True:
        try:
            feed.set_watched(await sync_to_async(live_connection(watched_codes))(provider=provider))
        except Exception:
            log.exception("%s: could not read the watched instruments", provider)
        await asyncio.sleep(interval)


async def run_feed(provider: str, *, stop: asyncio.Event, feed_kwargs: dict | None = None,
                   lease: Lease | None = None) -> int:
    """Run until `stop` is set or the feed gives up. Returns a process exit code.

    Consumes only while holding the account's lease (feeds/lease.py); until then, and again after
    losing it, the worker stands by. A standby for a provider without resume keeps a connection
    of its own and hands what it held to the pipeline when it takes over (feeds/standby.py)."""
    if provider not in FEEDS:
        raise UnknownProvider(f"unknown provider {provider!r}; known: {', '.join(sorted(FEEDS))}")
    account, _ = await sync_to_async(live_connection(_load))(provider)
    if account is None:
        log.error("%s: no provider account; configure one with `manage.py provider set %s`", provider, provider)
        return 2
    lease = lease or Lease(account.pk, ttl=settings.FEEDS_LEASE_SECONDS, poll=settings.FEEDS_LEASE_POLL_SECONDS)
    try:
        while not stop.is_set():
            code = await _stand_by_then_consume(provider, lease, stop=stop, feed_kwargs=feed_kwargs or {})
            if code is not None:
                return code
        return 0
    finally:
        await lease.release()
        await lease.close()


async def _stand_by_then_consume(provider: str, lease: Lease, *, stop: asyncio.Event, feed_kwargs: dict) -> int | None:
    """One term: wait for the lease, then consume until stopped (an exit code) or the lease is
    lost (None: stand by again)."""
    feed_class = import_string(FEEDS[provider])
    hot = None
    if not getattr(feed_class, "resumable", False):
        account, _ = await sync_to_async(live_connection(_load))(provider)
        if account is not None and account.enabled:
            hot = _HotStandby(provider, feed_class, account, feed_kwargs)
    held = metrics.LEASE_HELD.labels(provider)
    held.set(0)
    try:
        if not await lease.wait_acquired(stop):
            return 0
    finally:
        if hot is not None and not lease.held():
            await hot.stop()
    held.set(1)
    metrics.LEASE_TAKEOVERS.labels(provider).inc()
    try:
        return await _take_over_and_consume(provider, lease, hot, feed_class, stop=stop, feed_kwargs=feed_kwargs)
    finally:
        held.set(0)


async def _take_over_and_consume(provider: str, lease: Lease, hot: _HotStandby | None, feed_class, *,
                                 stop: asyncio.Event, feed_kwargs: dict) -> int | None:
    # Read after acquiring: the account may have changed, and a resumable feed reads its cursor
    # only now, after everything the previous holder committed (feeds/lease.py's fence).
    account, row = await sync_to_async(live_connection(_load))(provider)
    if account is None:
        return 2
    # No register_secret here: reading the account decrypted its secrets, which registers them for
    # masking (feeds/crypto.py).
    status = FeedStatusReporter(
        account.pk, provider=provider,
        **({"messages": row.messages, "parse_errors": row.parse_errors, "reconnects": row.reconnects} if row else {})
    )
    if not account.enabled:
        if hot is not None:
            await hot.stop()
        await status.set_state("disabled")
        log.info("%s: account disabled; nothing to do", provider)
        return 0
    pipeline = Pipeline(status=status, provider=provider, store=functools.partial(events_store, fence=lease.fence))
    if hot is not None:
        feed, feed_task, helpers = hot.feed, hot.task, hot.helpers
        handed = await hot.take_over(pipeline, status)
        log.info("%s: took over with %d events held while standing by", provider, handed)
    else:
        feed = feed_class.from_account(account, pipeline=pipeline, status=status, **feed_kwargs)
        feed_task = asyncio.create_task(feed.run(), name=f"{provider}-feed")
        helpers = [asyncio.create_task(_follow_watchlists(feed, provider, settings.FEEDS_WATCH_POLL_SECONDS))]
    return await _consume(provider, account, feed, feed_task, pipeline, status, lease, helpers=helpers, stop=stop)


class _HotStandby:
    """A feed connected and subscribed while its worker waits for the lease (feeds/standby.py)."""

    def __init__(self, provider: str, feed_class, account: ProviderAccount, feed_kwargs: dict) -> None:
        self.handover = Handover(window_seconds=settings.FEEDS_STANDBY_WINDOW_SECONDS)
        self.status = StatusSwitch(MemoryStatus(provider=provider))
        self.feed = feed_class.from_account(account, pipeline=self.handover, status=self.status, **feed_kwargs)
        self.helpers = [asyncio.create_task(_follow_watchlists(self.feed, provider, settings.FEEDS_WATCH_POLL_SECONDS))]
        self.task = asyncio.create_task(self.feed.run(), name=f"{provider}-standby-feed")

    async def take_over(self, pipeline: Pipeline, reporter: FeedStatusReporter) -> int:
        await self.status.switch(reporter)
        return await self.handover.take_over(pipeline)

    async def stop(self) -> None:
        self.feed.stop()
        await asyncio.wait({self.task}, timeout=3)
        for task in [self.task, *self.helpers]:
            task.cancel()
        await asyncio.gather(self.task, *self.helpers, return_exceptions=True)


async def _consume(provider: str, account: ProviderAccount, feed, feed_task: asyncio.Task, pipeline: Pipeline,
                   status: FeedStatusReporter, lease: Lease, *, helpers: list[asyncio.Task],
                   stop: asyncio.Event) -> int | None:
    pipeline_task = asyncio.create_task(pipeline.run(), name=f"{provider}-pipeline")
    helpers = [*helpers, asyncio.create_task(status.run(), name=f"{provider}-status"),
               # Only the holder prunes its provider's old rows (feeds/retention.py): one run per account.
               asyncio.create_task(retention_loop(provider=provider), name=f"{provider}-retention")]
    stop_task = asyncio.create_task(stop.wait())
    kept = asyncio.create_task(lease.keep(), name=f"{provider}-lease")
    log.info("%s: feed consuming from %s", provider, account.endpoint)
    lost = False
    try:
        await asyncio.wait({feed_task, stop_task, pipeline_task, kept}, return_when=asyncio.FIRST_COMPLETED)
        lost = kept.done() or (pipeline_task.done() and not pipeline_task.cancelled()
                               and isinstance(pipeline_task.exception(), LeaseLost))
    finally:
        feed.stop()
        await asyncio.wait({feed_task}, timeout=3)  # never raises: a crashed feed is reported below
        feed_task.cancel()  # e.g. waiting for a pipeline that gave up
        if not lost:
            # Store what was received before stopping the pipeline, in order: cancelling it first
            # and storing the rest afterwards could commit a cursor past a batch that was cut short.
            # Without the lease there is nothing to drain: the fence would refuse every batch.
            idle = asyncio.create_task(pipeline.wait_idle())
            await asyncio.wait({idle, pipeline_task, kept}, timeout=DRAIN_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            helpers.append(idle)
        for task in [pipeline_task, kept, *helpers, stop_task]:
            task.cancel()
        await asyncio.gather(feed_task, pipeline_task, kept, *helpers, stop_task, return_exceptions=True)
        if lost:
            pass  # the FeedStatus row belongs to the next holder now: leave it alone
        elif status.state in REFUSAL_STATES:
            await status.flush()  # keep the refusal visible: it needs a person, not a restart
        else:
            await status.set_state("stopped")
    if lost:
        log.error("%s: lease lost; stopped consuming, standing by", provider)
        return None
    if not pipeline_task.cancelled() and pipeline_task.exception():
        why = "the database stayed unreachable" if isinstance(pipeline_task.exception(), StoreUnavailable) else \
            "the pipeline crashed"
        log.error("%s: %s; exiting for a restart", provider, why, exc_info=pipeline_task.exception())
        return 1
    if feed_task.done() and not feed_task.cancelled() and feed_task.exception():
        log.error("%s: feed crashed", provider, exc_info=feed_task.exception())
        return 1
    return 3 if status.state in REFUSAL_STATES else 0
