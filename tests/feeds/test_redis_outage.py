"""The live backend's Redis stops or hangs while events flow: the pipeline keeps storing, its
publish step fails fast and bounded, the outage is logged once, and publishing resumes.

Each test runs its own redis-server (tests/redisserver.py): the shared one is never touched.
Settings point REDIS_URL at it, so feeds.hub.live_backend() (and this loop's hub) use it, with the
production connection options (settings.REDIS_CONNECTION): a hung Redis is only cut short by
feeds/broadcast.py's bound, not by a socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async

from feeds import events as ev
from feeds import metrics
from feeds.broadcast import LayerUnavailable, publish_events, publish_feed_status
from feeds.groups import instrument_group
from feeds.hub import HubUnavailable, live_backend
from feeds.livestore import Outgoing
from feeds.pipeline import Pipeline
from feeds.status import MemoryStatus
from feeds.store import events_store
from tests.factories import instrument
from tests.live import LOST, Inbox, listening
from tests.redisserver import RedisServer

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
BOUND = 5.0  # issue 10: no Redis call holds a worker longer than this


def news(external_id: str) -> ev.News:
    return ev.News(provider="stocknews", code="AAPL", received_at=T, external_id=external_id, headline=external_id,
                   published_at=T)


def layer_errors() -> float:
    return metrics.EVENTS_DROPPED.labels("stocknews", "layer_error")._value.get()


async def listening_once_up(stack: contextlib.AsyncExitStack, stream: str, *, timeout: float = 10) -> Inbox:
    """Listen to `stream` as a browser's reconnect would: the hub refuses joins (HubUnavailable)
    until its subscription can be made again, after its backoff."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await stack.enter_async_context(listening(stream))
            except HubUnavailable:
                await asyncio.sleep(0.05)  # polling interval: the join succeeding is the condition


async def first_delivered(pipeline: Pipeline, inbox: Inbox, prefix: str, *, timeout: float = 15) -> str:
    """Submit `prefix-N` news until one reaches `inbox` (the first tries may fall in the
    publish retry interval); returns the id received. Events of earlier phases that Redis only
    ran once it answered again (sent before a publish timed out) are skipped."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        await pipeline.submit([news(f"{prefix}-{attempt}")])
        await pipeline.wait_idle()
        try:
            async with asyncio.timeout(0.5):
                while True:
                    frame = await inbox.next()
                    assert frame != LOST, "the hub lost its subscription"
                    if frame["event"]["external_id"].startswith(f"{prefix}-"):
                        return frame["event"]["external_id"]
        except TimeoutError:
            continue
    raise AssertionError(f"nothing published within {timeout}s")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_stopped_redis_costs_the_publishes_only_and_is_logged_once(settings, caplog):
    caplog.set_level(logging.INFO)
    with RedisServer() as redis:
        settings.REDIS_URL = redis.url
        aapl = await sync_to_async(instrument)("AAPL")
        stream = instrument_group(aapl.id)
        status = MemoryStatus(provider="stocknews")
        pipeline = Pipeline(status=status, max_delay=0.05)
        runner = asyncio.create_task(pipeline.run())
        try:
            async with contextlib.AsyncExitStack() as before_stop:
                inbox = await before_stop.enter_async_context(listening(stream))
                assert await first_delivered(pipeline, inbox, "before") == "before-1"

                await asyncio.to_thread(redis.stop)
                # The hub notices too: its sockets close, their browsers will recover from history.
                assert await inbox.next() == LOST
            dropped_before = layer_errors()
            started = time.monotonic()
            for batch in range(10):
                await pipeline.submit([news(f"during-{batch}-a"), news(f"during-{batch}-b")])
                await pipeline.wait_idle()
            assert time.monotonic() - started < 2 * BOUND
            assert not runner.done(), "the pipeline stopped"
            assert pipeline.stored == 1 + 20
            assert layer_errors() - dropped_before == 20
            assert status.details["channel_layer"].startswith("unavailable: ")
            # Once per outage, not per batch or event; no traceback per batch.
            warnings = [r for r in caplog.records if "channel layer unavailable" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

            await asyncio.to_thread(redis.start)  # empty: positions and history gone, as in production
            async with contextlib.AsyncExitStack() as after_start:
                inbox = await listening_once_up(after_start, stream)
                # The first event after the restart goes out: a refused connection left no pause behind.
                assert await first_delivered(pipeline, inbox, "after") == "after-1"
            assert status.details["channel_layer"] == "ok"
            assert len([r for r in caplog.records if "channel layer available again" in r.getMessage()]) == 1
            assert len([r for r in caplog.records if "channel layer unavailable" in r.getMessage()]) == 1
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    stored = await sync_to_async(lambda: set(ev_ids()))()
    assert {f"during-{b}-{x}" for b in range(10) for x in "ab"} <= stored


def ev_ids():
    from feeds.models import NewsItem

    return NewsItem.objects.values_list("external_id", flat=True)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_paused_redis_holds_no_publish_longer_than_5s_and_the_store_keeps_committing(settings):
    async with contextlib.AsyncExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        settings.REDIS_URL = redis.url
        aapl = await sync_to_async(instrument)("AAPL")
        inbox = await stack.enter_async_context(listening(instrument_group(aapl.id)))
        loop = asyncio.get_running_loop()
        publish_times: list[float] = []
        commits: list[float] = []

        async def timed_publish(events):
            started = loop.time()
            try:
                return await publish_events(events)
            finally:
                publish_times.append(loop.time() - started)

        def committing_store(*, events):
            new = events_store(events=events)
            commits.append(time.monotonic())
            return new

        pipeline = Pipeline(store=committing_store, publish=timed_publish, max_delay=0.05)
        runner = asyncio.create_task(pipeline.run())
        try:
            assert await first_delivered(pipeline, inbox, "before") == "before-1"
            redis.pause()
            paused_at = time.monotonic()
            # The feed worker's status publish, the other live-backend call it awaits.
            with pytest.raises(LayerUnavailable):
                await publish_feed_status({"provider": "stocknews", "state": "connected"})
            status_publish = time.monotonic() - paused_at
            # Events keep arriving for 8 s, longer than the bound, while Redis answers nothing.
            n = 0
            while time.monotonic() - paused_at < 8:
                n += 1
                await pipeline.submit([news(f"paused-{n}")])
                await asyncio.sleep(0.1)  # the provider's pace, not a synchronisation
            await asyncio.wait_for(pipeline.wait_idle(), BOUND)
            paused_until = time.monotonic()
            redis.resume()
            assert not runner.done(), "the pipeline stopped"
            assert status_publish <= BOUND, f"status publish held the worker {status_publish:.1f}s"
            assert max(publish_times) <= BOUND, f"a publish held the pipeline {max(publish_times):.1f}s"
            during = [t for t in commits if paused_at <= t <= paused_until]
            edges = [paused_at, *during, paused_until]
            gaps = [b - a for a, b in zip(edges, edges[1:])]
            assert max(gaps) <= BOUND, f"the store waited {max(gaps):.1f}s for the publish step"
            assert pipeline.stored == 1 + n
            # Redis answers again: so do the publishes, and the hub's subscription never broke.
            assert (await first_delivered(pipeline, inbox, "resumed")).startswith("resumed-")
        finally:
            redis.resume()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


@pytest.mark.asyncio
async def test_pooled_connections_to_a_restarted_redis_cost_no_failed_call(settings):
    """The production options retry a stale pooled connection once, at once: after a restart the
    first publish (a worker) or position read (a browser's watch request) does not fail for it."""
    with RedisServer() as redis:
        settings.REDIS_URL = redis.url
        live = live_backend()
        streams = [f"pooled-{i}" for i in range(5)]
        # Several at once: several connections in the pool.
        await asyncio.gather(*(live.publish([Outgoing(s, "{}")]) for s in streams),
                             *(live.read([s], {}) for s in streams))
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(redis.start)
        for i, stream in enumerate(streams):
            assert await asyncio.wait_for(live.publish([Outgoing(stream, f'{{"n":{i}}}')]), BOUND) == [1]
            recovery = await asyncio.wait_for(live.read([stream], {}), BOUND)
            assert recovery[stream].position.seq == 1  # the restarted Redis started the stream again
