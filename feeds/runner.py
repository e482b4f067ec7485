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
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from .db import live_connection
from .models import FeedStatus, Instrument, ProviderAccount
from .pipeline import Pipeline, StoreUnavailable
from .providers import FEEDS
from .status import FeedStatusReporter

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


async def run_feed(provider: str, *, stop: asyncio.Event, feed_kwargs: dict | None = None) -> int:
    """Run until `stop` is set or the feed gives up. Returns a process exit code."""
    if provider not in FEEDS:
        raise UnknownProvider(f"unknown provider {provider!r}; known: {', '.join(sorted(FEEDS))}")
    account, row = await sync_to_async(live_connection(_load))(provider)
    if account is None:
        log.error("%s: no provider account; configure one with `manage.py provider set %s`", provider, provider)
        return 2
    # No register_secret here: reading the account decrypted its secrets, which registers them for
    # masking (feeds/crypto.py).
    status = FeedStatusReporter(
        account.pk, provider=provider,
        **({"messages": row.messages, "parse_errors": row.parse_errors, "reconnects": row.reconnects} if row else {})
    )
    if not account.enabled:
        await status.set_state("disabled")
        log.info("%s: account disabled; nothing to do", provider)
        return 0

    pipeline = Pipeline(status=status, provider=provider)
    feed = import_string(FEEDS[provider]).from_account(account, pipeline=pipeline, status=status, **(feed_kwargs or {}))
    pipeline_task = asyncio.create_task(pipeline.run(), name=f"{provider}-pipeline")
    helpers = [
        asyncio.create_task(status.run(), name=f"{provider}-status"),
        asyncio.create_task(_follow_watchlists(feed, provider, settings.FEEDS_WATCH_POLL_SECONDS)),
    ]
    feed_task = asyncio.create_task(feed.run(), name=f"{provider}-feed")
    stop_task = asyncio.create_task(stop.wait())
    log.info("%s: feed starting against %s", provider, account.endpoint)
    try:
        await asyncio.wait({feed_task, stop_task, pipeline_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        feed.stop()
        await asyncio.wait({feed_task}, timeout=3)  # never raises: a crashed feed is reported below
        feed_task.cancel()  # e.g. waiting for a pipeline that gave up
        # Store what was received before stopping the pipeline, in order: cancelling it first
        # and storing the rest afterwards could commit a cursor past a batch that was cut short.
        idle = asyncio.create_task(pipeline.wait_idle())
        await asyncio.wait({idle, pipeline_task}, timeout=DRAIN_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        for task in [idle, pipeline_task, *helpers, stop_task]:
            task.cancel()
        await asyncio.gather(feed_task, idle, pipeline_task, *helpers, stop_task, return_exceptions=True)
        if status.state in REFUSAL_STATES:
            await status.flush()  # keep the refusal visible: it needs a person, not a restart
        else:
            await status.set_state("stopped")
    if not pipeline_task.cancelled() and pipeline_task.exception():
        why = "the database stayed unreachable" if isinstance(pipeline_task.exception(), StoreUnavailable) else \
            "the pipeline crashed"
        log.error("%s: %s; exiting for a restart", provider, why, exc_info=pipeline_task.exception())
        return 1
    if feed_task.done() and not feed_task.cancelled() and feed_task.exception():
        log.error("%s: feed crashed", provider, exc_info=feed_task.exception())
        return 1
    return 3 if status.state in REFUSAL_STATES else 0
