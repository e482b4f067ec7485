"""The InsightSentry feed against its simulator over real sockets."""

from __future__ import annotations

import asyncio
import random

import pytest

from feeds.backoff import Backoff
from feeds.events import Bar, Quote
from feeds.providers.insightsentry.feed import InsightSentryFeed
from feeds.simulators.insightsentry import InsightSentrySimulator
from feeds.status import MemoryStatus
from tests.feedrunner import CollectingPipeline, running

pytestmark = pytest.mark.asyncio
KEY = "is-key-0001"



def make_feed(sim, **kwargs):
    status, pipeline = MemoryStatus(), CollectingPipeline()
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(3)))
    feed = InsightSentryFeed(endpoint=sim.url(), api_key=KEY, pipeline=pipeline, status=status, **kwargs)
    return feed, status, pipeline


def subscribe_messages(sim):
    return [(n, m) for n, m in sim.received if isinstance(m, dict) and "subscriptions" in m]


async def test_subscription_content_and_invalid_codes_never_on_the_wire():
    async with InsightSentrySimulator([KEY], tick_interval=None) as sim:
        feed, status, _ = make_feed(sim)
        feed.set_watched({"NASDAQ:AAPL", "AAPL", "NYSE:XOM"})
        async with running(feed):
            await sim.wait_for(lambda: len(subscribe_messages(sim)) == 1)
            assert sim.open_connections == 1  # the provider kept us: the message was valid
        [(_, message)] = subscribe_messages(sim)
        assert message["api_key"] == KEY
        assert {(s["code"], s["type"]) for s in message["subscriptions"]} == {
            ("NASDAQ:AAPL", "quote"), ("NASDAQ:AAPL", "series"), ("NYSE:XOM", "quote"), ("NYSE:XOM", "series")}
        assert status.details["invalid_codes"] == {"AAPL": "code 'AAPL' is not EXCHANGE:SYMBOL"}


async def test_quotes_and_bars_arrive_and_resubscribe_after_a_drop():
    async with InsightSentrySimulator([KEY], tick_interval=None, quote_shape="envelope", delays={"NASDAQ:AAPL": 900}) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"NASDAQ:AAPL"})
        async with running(feed):
            await sim.wait_for(lambda: len(subscribe_messages(sim)) == 1)
            sim.emit_quote("NASDAQ:AAPL", 180.25)
            await sim.wait_for(lambda: {type(e) for e in pipeline.events} == {Quote, Bar})
            sim.drop_all()  # TCP cut, no close frame
            await sim.wait_for(lambda: len(subscribe_messages(sim)) == 2)
        quote = next(e for e in pipeline.events if isinstance(e, Quote))
        assert quote.price == 180.25 and quote.delay_seconds == 900 and quote.code == "NASDAQ:AAPL"
        bar = next(e for e in pipeline.events if isinstance(e, Bar))
        assert bar.close == 180.25 and bar.interval == "1m"
        assert [n for n, _ in subscribe_messages(sim)] == [1, 2]
        assert status.reconnects == 1


async def test_eviction_is_reported_and_the_next_reconnect_waits_long():
    delays: list[float] = []
    async with InsightSentrySimulator([KEY], tick_interval=None) as sim:
        feed = None

        async def record(delay: float) -> None:
            delays.append(delay)
            feed.stop()

        feed, status, _ = make_feed(sim, sleep=record, fatal_hold_off=300)
        feed.set_watched({"NASDAQ:AAPL"})
        task = asyncio.create_task(feed.run())
        await sim.wait_for(lambda: len(subscribe_messages(sim)) == 1)
        await sim.evict(KEY)
        await asyncio.wait_for(task, 5)
    assert delays == [300]
    assert "connection_evicted" in status.last_error


async def test_a_malformed_frame_is_counted_and_the_connection_stays():
    async with InsightSentrySimulator([KEY], tick_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"NASDAQ:AAPL"})
        async with running(feed):
            await sim.wait_for(lambda: len(subscribe_messages(sim)) == 1)
            sim._broadcast(sim._all_ws(), {"unexpected": True})
            sim.emit_quote("NASDAQ:AAPL", 181.0)
            await sim.wait_for(lambda: any(isinstance(e, Quote) for e in pipeline.events))
        assert status.parse_errors == 1 and sim.connection_attempts == 1
