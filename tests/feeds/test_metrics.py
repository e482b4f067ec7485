"""Prometheus metrics, scraped over HTTP from this process' metrics port as an operator would:
a real worker against its simulator, the real Redis layer, the real publish path."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from feeds import events as ev
from feeds import metrics
from feeds.backoff import Backoff
from feeds.broadcast import LayerUnavailable, publish_events
from feeds.models import FeedStatus, ProviderAccount
from feeds.runner import run_feed
from feeds.simulators.stocknews import StockNewsSimulator
from tests.factories import team_with_watchlist, user
from tests.scrape import delta, metrics_port, scrape, value

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
TOKEN = "metrics-token-0001"


async def eventually(predicate, *, timeout: float = 10, what: str = "condition"):
    try:
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                await asyncio.sleep(0.02)
            return result
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def news(instrument_id: int | None, external_id: str) -> ev.News:
    return ev.News(provider="stocknews", code="AAPL", received_at=T, instrument_id=instrument_id, symbol="AAPL",
                   external_id=external_id, headline=external_id, published_at=T)


def _setup(endpoint: str) -> None:
    ProviderAccount.objects.create(provider="stocknews", endpoint=endpoint, token=TOKEN)
    team_with_watchlist("Alpha", {user("alice"): "owner"}, ["AAPL"])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_worker_counts_received_parsed_stored_published_and_reconnects(settings):
    settings.FEEDS_WATCH_POLL_SECONDS = 0.1
    metrics_port()
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        await sync_to_async(_setup)(f"ws://127.0.0.1:{sim.port}/ws")
        before = scrape()
        stop = asyncio.Event()
        worker = asyncio.create_task(run_feed("stocknews", stop=stop,
                                              feed_kwargs={"backoff": Backoff(base=0.05, cap=0.1)}))
        await sim.wait_for(lambda: any(m.get("type") == "subscribe" for _, m in sim.received if isinstance(m, dict)))
        sim.emit_news("AAPL", stockTickers=["AAPL"])  # stored and published as a news item and a quote
        sim.emit_news("AAPL", timestamp=12345)  # "timestamp is not a string": a parse error
        await eventually(lambda: delta(before, scrape(), "tickerwire_events_published_total", provider="stocknews") >= 2,
                         what="the news and its quote to be published")
        await sim.close_all(1011)  # a server-side drop: the worker reconnects
        await eventually(lambda: delta(before, scrape(), "tickerwire_feed_messages_received_total",
                                       provider="stocknews") >= 4, what="the second `connected` frame")
        stop.set()
        assert await asyncio.wait_for(worker, 5) == 0
    after = scrape()
    row = await sync_to_async(FeedStatus.objects.get)()

    def moved(name: str, **labels: str) -> float:
        return delta(before, after, name, provider="stocknews", **labels)

    # connected, news, unparseable news, connected again: the same frames FeedStatus counted.
    assert moved("tickerwire_feed_messages_received_total") == row.messages == 4
    assert moved("tickerwire_feed_parse_errors_total") == row.parse_errors == 1
    assert moved("tickerwire_feed_reconnects_total") == row.reconnects == 1
    assert moved("tickerwire_events_stored_total") == 2
    assert moved("tickerwire_events_published_total") == 2
    assert moved("tickerwire_store_failures_total") == 0
    assert moved("tickerwire_events_dropped_total", reason="store_failed") == 0
    assert value(after, "tickerwire_pipeline_queue_depth", provider="stocknews") == 0
    assert value(after, "tickerwire_feed_state", provider="stocknews", tickerwire_feed_state="stopped") == 1
    assert value(after, "tickerwire_feed_state", provider="stocknews", tickerwire_feed_state="connected") == 0


@pytest.mark.asyncio
async def test_publish_counts_each_event_published_or_dropped(settings):
    metrics_port()
    before = scrape()
    assert await publish_events([news(7001, "sent"), news(None, "unresolved")]) == 1
    middle = scrape()
    assert delta(before, middle, "tickerwire_events_published_total", provider="stocknews") == 1
    assert delta(before, middle, "tickerwire_events_dropped_total", provider="stocknews", reason="no_instrument") == 1
    # The live backend's Redis refuses connections: the batch (one call) is lost, every event of it
    # counted as such.
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with pytest.raises(LayerUnavailable):
        await publish_events([news(7001, "lost-1"), news(7002, "lost-2")])
    after = scrape()
    assert delta(middle, after, "tickerwire_events_dropped_total", provider="stocknews", reason="layer_error") == 2
    assert delta(middle, after, "tickerwire_events_published_total", provider="stocknews") == 0


@pytest.mark.asyncio
async def test_messages_the_layer_refuses_for_a_full_channel_are_counted(settings):
    from django.utils.log import configure_logging

    metrics_port()
    # As in the demo (manage.py, then project.asgi): LOGGING applied twice must still count once.
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {
        "hosts": [settings.REDIS_URL], "prefix": f"twtest-cap-{uuid.uuid4().hex[:8]}", "capacity": 1}}}
    layer = get_channel_layer()
    channel = await layer.new_channel()  # a browser socket that does not read
    await layer.group_add("instrument.7001", channel)
    before = scrape()
    for _ in range(3):
        await layer.group_send("instrument.7001", {"type": "forward.text", "text": "{}"})
    assert delta(before, scrape(), "tickerwire_socket_send_drops_total", reason="layer_full") == 2
    await layer.flush()


def _listeners(port: int) -> set[str]:
    """Local addresses listening on `port` (Linux /proc), hex as the kernel writes them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc to see the bound address")
def test_metrics_are_served_once_per_process_on_loopback_only():
    port = metrics_port()
    assert metrics.serve(0) == port and metrics.serve(port + 1) == port  # once per process
    assert _listeners(port) == {"0100007F"}  # 127.0.0.1, and nothing else (no 0.0.0.0, no ::)
    samples = scrape(port)
    assert value(samples, "tickerwire_websockets_open") >= 0
    assert ("tickerwire_socket_send_drops_total", frozenset({("reason", "layer_full")})) in samples
