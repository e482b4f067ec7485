"""`run_feed`: the worker body against the simulator, with the real database and Redis live path."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from feeds.groups import instrument_group
from feeds.models import FeedStatus, NewsItem, ProviderAccount
from feeds.runner import run_feed
from feeds.simulators.stocknews import StockNewsSimulator
from tests.factories import team_with_watchlist, user
from tests.live import listening

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
TOKEN = "runner-token-0001"


def setup(endpoint: str, token: str = TOKEN):
    ProviderAccount.objects.create(provider="stocknews", endpoint=endpoint, token=token)
    watchlist = team_with_watchlist("Alpha", {user("alice"): "owner"}, ["AAPL"])
    return watchlist.items.get().instrument


async def wait_for_state(state: str) -> FeedStatus:
    async with asyncio.timeout(10):
        while True:
            row = await sync_to_async(FeedStatus.objects.filter(state=state).first)()
            if row:
                return row
            await asyncio.sleep(0.02)


async def test_worker_subscribes_to_watched_tickers_stores_and_publishes(settings):
    settings.FEEDS_WATCH_POLL_SECONDS = 0.1
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        aapl = await sync_to_async(setup)(f"ws://127.0.0.1:{sim.port}/ws")
        async with listening(instrument_group(aapl.id)) as inbox:
            stop = asyncio.Event()
            worker = asyncio.create_task(run_feed("stocknews", stop=stop))
            await sim.wait_for(lambda: any(m.get("type") == "subscribe" for _, m in sim.received
                                           if isinstance(m, dict)))
            assert [m for _, m in sim.received if m.get("type") == "subscribe"][0]["tickers"] == ["AAPL"]
            sent = sim.emit_news("AAPL")
            received = {event["kind"] for event in await inbox.events(2, timeout=10)}
        assert received == {"news", "quote"}
        status = await wait_for_state("connected")
        stop.set()
        assert await asyncio.wait_for(worker, 5) == 0
    assert await sync_to_async(NewsItem.objects.filter(external_id=sent["data"]["articleSlug"]).exists)()
    final = await sync_to_async(FeedStatus.objects.get)(pk=status.pk)
    assert final.state == "stopped" and final.messages >= 2  # connected + news


async def test_refused_token_is_reported_as_auth_failed_and_the_worker_exits():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        await sync_to_async(setup)(f"ws://127.0.0.1:{sim.port}/ws", token="revoked-token-99")
        code = await asyncio.wait_for(run_feed("stocknews", stop=asyncio.Event()), 10)
    row = await sync_to_async(FeedStatus.objects.get)()
    assert code == 3 and row.state == "auth_failed" and "Invalid token" in row.last_error
    assert sim.connection_attempts == 1


async def test_disabled_account_is_reported_and_not_connected():
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        await sync_to_async(setup)(f"ws://127.0.0.1:{sim.port}/ws")
        await sync_to_async(ProviderAccount.objects.update)(enabled=False)
        assert await run_feed("stocknews", stop=asyncio.Event()) == 0
    assert (await sync_to_async(FeedStatus.objects.get)()).state == "disabled"
    assert sim.connection_attempts == 0


async def test_an_idle_worker_keeps_its_heartbeat_moving_and_stops_as_stopped(settings):
    from datetime import timedelta

    from feeds.selectors import feed_status_message

    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        await sync_to_async(setup)(f"ws://127.0.0.1:{sim.port}/ws")
        stop = asyncio.Event()
        worker = asyncio.create_task(run_feed("stocknews", stop=stop))
        first = (await wait_for_state("connected")).heartbeat_at
        async with asyncio.timeout(5):  # nothing arrives, yet the heartbeat moves (about every second)
            while (await sync_to_async(FeedStatus.objects.get)()).heartbeat_at <= first:
                await asyncio.sleep(0.05)
        stop.set()
        assert await asyncio.wait_for(worker, 5) == 0
    row = await sync_to_async(FeedStatus.objects.select_related("account").get)()
    # Stopped on purpose: it stays "stopped" however old its last heartbeat gets.
    later = row.heartbeat_at + timedelta(seconds=settings.FEEDS_HEARTBEAT_STALE_SECONDS * 10)
    assert (await sync_to_async(feed_status_message)(row, now=later))["state"] == "stopped"


class CrashingFeed:
    """A feed whose loop raises after handing the pipeline one frame."""

    name = "stocknews"

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    @classmethod
    def from_account(cls, account, *, pipeline, status, **kwargs):
        return cls(pipeline)

    async def run(self) -> None:
        from datetime import datetime, timezone

        from feeds import events as ev

        now = datetime.now(timezone.utc)
        await self.pipeline.submit([ev.News(provider="stocknews", code="AAPL", received_at=now, external_id="last",
                                            headline="received before the crash", published_at=now)])
        raise RuntimeError("feed bug")

    def stop(self) -> None:
        pass

    def set_watched(self, codes) -> None:
        pass


async def test_a_crashed_feed_ends_the_worker_with_code_1_after_storing_what_it_received(monkeypatch):
    from feeds.providers import FEEDS

    monkeypatch.setitem(FEEDS, "stocknews", f"{__name__}.CrashingFeed")
    await sync_to_async(setup)("ws://127.0.0.1:9/ws")
    assert await asyncio.wait_for(run_feed("stocknews", stop=asyncio.Event()), 15) == 1
    assert await sync_to_async(lambda: list(NewsItem.objects.values_list("external_id", flat=True)))() == ["last"]
    assert (await sync_to_async(FeedStatus.objects.get)()).state == "stopped"


async def test_the_lease_holder_applies_the_retention_policy_to_its_provider(settings):
    """Old rows of the worker's own provider go when it starts consuming (then hourly); others stay."""
    from datetime import datetime, timedelta, timezone

    settings.RETENTION_NEWS_DAYS = "730"
    old = datetime.now(timezone.utc) - timedelta(days=800)

    def seed():
        aapl = setup("ws://127.0.0.1:9/ws")  # nothing listens: the link backs off, the holder still prunes
        for provider in ("stocknews", "knowsis"):
            NewsItem.objects.create(instrument=aapl, provider=provider, external_id=f"old-{provider}", headline="x",
                                    published_at=old, received_at=old)

    await sync_to_async(seed)()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_feed("stocknews", stop=stop))
    try:
        async with asyncio.timeout(20):
            while await sync_to_async(NewsItem.objects.filter(provider="stocknews").exists)():
                await asyncio.sleep(0.05)
        assert await sync_to_async(NewsItem.objects.filter(provider="knowsis").exists)()
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
