"""10 malformed frames among 1,000: the StockNews worker (runner, pipeline, PostgreSQL) stores the
990 good ones, counts the 10, keeps its connection, and logs the skips rate-limited."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random

import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.server import broadcast

from feeds import logthrottle
from feeds.backoff import Backoff
from feeds.models import FeedStatus, NewsItem, ProviderAccount
from feeds.runner import run_feed
from feeds.simulators.stocknews import StockNewsSimulator
from tests.factories import instrument

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
TOKEN = "sn-malformed-token-1234"
MALFORMED = ["{not json", "[1, 2, 3]", '{"type": "mystery"}', "", '{"type": "news"}', "null", '"text"',
             '{"type": "news", "data": 7}', "\u00ff\u00fe garbage", '{"type": "news", "data": {"title": 1}}']


def setup_account(sim: StockNewsSimulator) -> None:
    ProviderAccount.objects.create(provider="stocknews", endpoint=f"ws://127.0.0.1:{sim.port}/ws", token=TOKEN)
    instrument("AAPL")


def stored() -> int:
    return NewsItem.objects.filter(provider="stocknews").values("external_id").distinct().count()


async def test_ten_malformed_frames_among_a_thousand(caplog, monkeypatch):
    monkeypatch.setattr(logthrottle, "_throttles", {})  # a fresh budget: other tests logged skips too
    async with StockNewsSimulator([TOKEN], news_interval=None, seed=2) as sim:
        await sync_to_async(setup_account)(sim)
        stop = asyncio.Event()
        kwargs = {"backoff": Backoff(base=0.01, cap=0.05, rng=random.Random(1))}
        with caplog.at_level(logging.WARNING, logger="feeds"):
            task = asyncio.create_task(run_feed("stocknews", stop=stop, feed_kwargs=kwargs))
            try:
                await sim.wait_for(lambda: sim.open_connections == 1, timeout=10)
                bad = iter(MALFORMED)
                for n in range(1000):
                    if n % 100 == 50:
                        broadcast(sim._all_ws(), next(bad))
                    else:
                        sim.emit_news("AAPL")
                count = 0

                async def poll() -> int:
                    nonlocal count
                    count = await sync_to_async(stored)()
                    return count

                async with asyncio.timeout(60):
                    while await poll() < 990:
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task, 15)
    row = await sync_to_async(FeedStatus.objects.get)()
    assert count == 990
    assert row.parse_errors == 10
    assert sim.connection_attempts == 1 and row.reconnects == 0  # the connection was kept throughout
    skips = [r for r in caplog.records if r.name.startswith("feeds.providers.stocknews")]
    assert len([r for r in skips if "skipped unparseable frame" in r.getMessage()]) == 5  # the burst
    assert any("rate-limited" in r.getMessage() for r in skips)  # and one line saying so
    assert len(skips) == 6 and all(r.exc_info is None for r in skips)  # no tracebacks
