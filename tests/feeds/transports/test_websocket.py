"""The reconnecting WebSocket loop, driven through the StockNews feed against its simulator
over real loopback sockets."""

from __future__ import annotations

import asyncio
import random

import pytest

from feeds.backoff import Backoff
from feeds.providers.stocknews.feed import StockNewsFeed
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.status import MemoryStatus
from tests.feedrunner import CollectingPipeline, running

pytestmark = pytest.mark.asyncio
TOKEN = "test-token-123456"




def make_feed(sim: StockNewsSimulator, *, token: str = TOKEN, **kwargs) -> tuple[StockNewsFeed, MemoryStatus, CollectingPipeline]:
    status, pipeline = MemoryStatus(), CollectingPipeline()
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(7)))
    feed = StockNewsFeed(endpoint=f"ws://127.0.0.1:{sim.port}/ws", token=token, pipeline=pipeline, status=status, **kwargs)
    return feed, status, pipeline


def subscribes(sim: StockNewsSimulator) -> list[tuple[int, list[str]]]:
    return [(conn, msg["tickers"]) for conn, msg in sim.received if isinstance(msg, dict) and msg.get("type") == "subscribe"]


async def test_subscribes_then_parses_news_into_events():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"AAPL", "msft"})
        async with running(feed):
            await sim.wait_for(lambda: subscribes(sim) == [(1, ["AAPL", "MSFT"])])
            sent = sim.emit_news("AAPL", summary="Apple ships a thing.")
            await asyncio.wait_for(pipeline.arrived.wait(), 5)
        assert pipeline.events[0].external_id == sent["data"]["articleSlug"]
        assert pipeline.events[0].headline == "Apple ships a thing."
        assert status.details["subscription_expires_at"].endswith("Z")
        assert status.states[:2] == ["connecting", "connected"] and status.state == "stopped"


async def test_reconnects_after_a_drop_and_replays_the_subscription():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        feed, status, _ = make_feed(sim)
        feed.set_watched({"AAPL"})
        async with running(feed):
            await sim.wait_for(lambda: len(subscribes(sim)) == 1)
            await sim.close_all(1011, "server restart")
            await sim.wait_for(lambda: len(subscribes(sim)) == 2)
        assert subscribes(sim) == [(1, ["AAPL"]), (2, ["AAPL"])]
        assert status.reconnects == 1 and "backing_off" in status.states
        assert "closed 1011: server restart" in status.last_error


async def test_watchlist_change_sends_a_new_subscription():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        feed, *_ = make_feed(sim)
        feed.set_watched({"AAPL"})
        async with running(feed):
            await sim.wait_for(lambda: len(subscribes(sim)) == 1)
            feed.set_watched({"AAPL"})  # unchanged: nothing sent
            feed.set_watched({"AAPL", "TSLA"})
            await sim.wait_for(lambda: len(subscribes(sim)) == 2)
        assert subscribes(sim)[-1] == (1, ["AAPL", "TSLA"])


async def test_invalid_token_close_1008_stops_without_reconnecting():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        feed, status, _ = make_feed(sim, token="wrong-token")
        await asyncio.wait_for(feed.run(), 5)  # returns by itself: no retry loop
        assert sim.connection_attempts == 1
        assert status.state == "auth_failed"
        assert status.last_error.startswith("closed 1008: Invalid token")
        assert "wrong-token" not in status.last_error


async def test_accept_then_close_server_gets_growing_backoff_from_the_policy():
    """Delays come from the policy and are not reset by each successful handshake."""
    recorded: list[float] = []
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        sim.close_after_connect = 1011
        feed = None

        async def record_sleep(delay: float) -> None:
            recorded.append(delay)
            if len(recorded) == 6:
                feed.stop()

        feed, status, _ = make_feed(sim, backoff=Backoff(base=1, cap=60, rng=random.Random(42)), sleep=record_sleep)
        await asyncio.wait_for(feed.run(), 10)
    expected_policy = Backoff(base=1, cap=60, rng=random.Random(42))
    assert recorded == [expected_policy.next_delay() for _ in range(6)]
    assert sim.connection_attempts == 6


async def test_connection_attempts_are_budgeted_per_minute():
    """Even with zero backoff, at most 10 attempts go out in a window (then the loop waits)."""
    waits: list[float] = []
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        sim.refuse_connections = True
        feed = None

        async def record_sleep(delay: float) -> None:
            waits.append(delay)
            if delay > 1:  # the budget wait: stop here instead of waiting a minute
                feed.stop()

        feed, *_ = make_feed(sim, backoff=Backoff(base=0, cap=0), sleep=record_sleep)
        await asyncio.wait_for(feed.run(), 10)
    assert sim.connection_attempts == 10
    assert waits[-1] > 50
