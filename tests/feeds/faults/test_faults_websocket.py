"""The WebSocket feeds (StockNews.live, InsightSentry) through the fault proxy, against their
simulators over real loopback sockets. Timings are scaled down through the feeds' own
`WebSocketOptions`/`Backoff`; the production defaults are pinned separately."""

from __future__ import annotations

import json
import random

import pytest
from websockets.asyncio.server import broadcast

from feeds.backoff import Backoff
from feeds.events import News, Quote
from feeds.providers.insightsentry.feed import InsightSentryFeed
from feeds.providers.stocknews.feed import StockNewsFeed
from feeds.simulators.insightsentry import InsightSentrySimulator
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.status import MemoryStatus
from feeds.transports.websocket import WebSocketOptions
from tests.faultproxy import fault_proxy  # noqa: F401 (fixture)
from tests.feedrunner import CollectingPipeline, running

from .common import UTF8_TEXT, normalised, recording_sleep, until

pytestmark = pytest.mark.asyncio
TOKEN = "sn-fault-token-1234"
KEY = "is-fault-key-0001"
# Keep-alive scaled ~60x down: ping every 0.3 s, pong within 0.3 s (production: 20 s + 20 s).
SCALED = WebSocketOptions(ping_interval=0.3, ping_timeout=0.3, open_timeout=0.6, close_timeout=0.3)


def fast_backoff(seed: int = 1) -> Backoff:
    return Backoff(base=0.01, cap=0.05, rng=random.Random(seed))


def stocknews(url: str, **kwargs):
    status, pipeline = MemoryStatus(), CollectingPipeline()
    kwargs.setdefault("backoff", fast_backoff())
    feed = StockNewsFeed(endpoint=url, token=TOKEN, pipeline=pipeline, status=status, **kwargs)
    feed.set_watched({"AAPL"})
    return feed, status, pipeline


def insightsentry(url: str, **kwargs):
    status, pipeline = MemoryStatus(), CollectingPipeline()
    kwargs.setdefault("backoff", fast_backoff())
    feed = InsightSentryFeed(endpoint=url, api_key=KEY, pipeline=pipeline, status=status, **kwargs)
    feed.set_watched({"NASDAQ:AAPL"})
    return feed, status, pipeline


def sn_subscribes(sim) -> int:
    return sum(1 for _, m in sim.received if isinstance(m, dict) and m.get("type") == "subscribe")


def is_subscribes(sim) -> int:
    return sum(1 for _, m in sim.received if isinstance(m, dict) and "subscriptions" in m)


def has_summary(events) -> bool:
    return any(isinstance(e, News) and e.summary == UTF8_TEXT for e in events)


# -- 1-byte slicing ------------------------------------------------------------------------------

# "deflate" is production (permessage-deflate: the slices cut compressed bytes); without it the
# text frames cross the proxy as plain UTF-8, so the slices cut inside multi-byte characters.
@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
async def test_stocknews_events_through_a_1_byte_slicing_proxy_equal_the_direct_ones(fault_proxy, compression):
    async with StockNewsSimulator([TOKEN], news_interval=None, seed=4) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.slicing = True
        options = WebSocketOptions(compression=compression)
        direct, _, direct_out = stocknews(f"ws://127.0.0.1:{sim.port}/ws", options=options)
        sliced, sliced_status, sliced_out = stocknews(proxy.url("ws", "/ws"), options=options)
        async with running(direct), running(sliced):
            await sim.wait_for(lambda: sn_subscribes(sim) == 2, timeout=10)
            for _ in range(3):
                sim.emit_news("AAPL")
            # The simulator escapes non-ASCII (json.dumps' default); send this one as raw UTF-8.
            sim.silent = True
            message = sim.emit_news("AAPL", summary=UTF8_TEXT)
            sim.silent = False
            broadcast(sim._all_ws(), json.dumps(message, ensure_ascii=False))
            # One article gives an event per ticker it names; wait for the last article on both.
            await until(lambda: has_summary(direct_out.events) and has_summary(sliced_out.events)
                        and len(sliced_out.events) == len(direct_out.events), 20, "news on both")
        assert normalised(sliced_out.events) == normalised(direct_out.events)
        assert len({e.external_id for e in sliced_out.events if isinstance(e, News)}) == 4
        assert proxy.writes_down == proxy.bytes_down > 1000  # it really went byte by byte
        assert sliced_status.parse_errors == 0 and sliced.transport.connections == 1


async def test_insightsentry_events_through_a_1_byte_slicing_proxy_equal_the_direct_ones(fault_proxy):
    async with InsightSentrySimulator([KEY], tick_interval=None, heartbeat_interval=None, quote_shape="mixed",
                                      seed=4) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.slicing = True
        direct, _, direct_out = insightsentry(sim.url())
        sliced, sliced_status, sliced_out = insightsentry(proxy.url("ws", "/live"))
        async with running(direct), running(sliced):
            await sim.wait_for(lambda: is_subscribes(sim) == 2, timeout=10)
            for price in (180.25, 180.5, 179.75):  # flat and envelope quotes, and series bars
                sim.emit_quote("NASDAQ:AAPL", price)
            # A code with multi-byte characters, sent as raw UTF-8 (the simulator would escape it).
            broadcast(sim._all_ws(), json.dumps({"code": f"XETR:{UTF8_TEXT}", "last_price": 1.5, "lp_time": 1770000000},
                                                 ensure_ascii=False))
            await until(lambda: len(direct_out.events) >= 7 and len(sliced_out.events) == len(direct_out.events)
                        and any(e.code.startswith("XETR:") for e in sliced_out.events), 20, "quotes on both")
        assert normalised(sliced_out.events) == normalised(direct_out.events)
        assert [e for e in sliced_out.events if isinstance(e, Quote)][-1].code == f"XETR:{UTF8_TEXT}"
        assert proxy.writes_down == proxy.bytes_down > 500
        assert sliced_status.parse_errors == 0 and sliced.transport.connections == 1


# -- black hole ----------------------------------------------------------------------------------

async def _black_hole_is_detected_and_rebuilt(proxy, feed, status, pipeline, sim, subscribes, emit):
    async with running(feed):
        await sim.wait_for(lambda: subscribes(sim) == 1 and status.state == "connected", timeout=10)
        proxy.blackhole = True
        # Detected by the keep-alive (ping 0.3 s + pong 0.3 s, then a 0.3 s close handshake).
        took = await until(lambda: status.state != "connected", 5, "black hole detected")
        assert took < 0.3 + 0.3 + 0.3 + 1.0
        # It keeps trying by itself; each try through the hole times out its handshake.
        await proxy.wait_for(lambda: proxy.accepted >= 3, timeout=10)
        assert status.state != "connected" and subscribes(sim) == 1
        proxy.blackhole = False
        await sim.wait_for(lambda: subscribes(sim) == 2 and status.state == "connected", timeout=10)
        emit()
        await until(lambda: len(pipeline.events) >= 1, 10, "an event on the rebuilt link")
    assert status.reconnects >= 2 and "backing_off" in status.states


async def test_stocknews_detects_a_black_hole_and_rebuilds_the_link(fault_proxy):
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        proxy = await fault_proxy(sim.port)
        feed, status, pipeline = stocknews(proxy.url("ws", "/ws"), options=SCALED)
        await _black_hole_is_detected_and_rebuilt(proxy, feed, status, pipeline, sim, sn_subscribes,
                                                  lambda: sim.emit_news("AAPL"))


async def test_insightsentry_detects_a_black_hole_and_rebuilds_the_link(fault_proxy):
    async with InsightSentrySimulator([KEY], tick_interval=None, heartbeat_interval=None) as sim:
        proxy = await fault_proxy(sim.port)
        feed, status, pipeline = insightsentry(proxy.url("ws", "/live"), options=SCALED)
        await _black_hole_is_detected_and_rebuilt(proxy, feed, status, pipeline, sim, is_subscribes,
                                                  lambda: sim.emit_quote("NASDAQ:AAPL", 181.0))


@pytest.mark.parametrize("make", [stocknews, insightsentry], ids=["stocknews", "insightsentry"])
async def test_production_keepalive_detects_a_black_hole_within_about_40_s(make):
    feed, *_ = make("ws://127.0.0.1:9/")  # never run: only its defaults are read
    options = feed.transport.options
    assert options.ping_interval is not None and options.ping_timeout is not None
    assert options.ping_interval + options.ping_timeout <= 40  # websockets' 20 s + 20 s
    assert options.open_timeout <= 10  # a black-holed handshake is given up too


# -- accept-then-close ---------------------------------------------------------------------------

SCALE = 30  # one minute of accept-then-close takes 2 s: every time in the policy divided by 30


@pytest.mark.parametrize("make,path", [(stocknews, "/ws"), (insightsentry, "/live")], ids=["stocknews", "insightsentry"])
async def test_accept_then_close_stays_within_the_backoff_policy(fault_proxy, make, path):
    """A server that completes every handshake and then drops the link: websockets' own loop
    would reset its backoff at each handshake and storm; ours must follow feeds/backoff.py."""
    simulator = StockNewsSimulator([TOKEN], news_interval=None) if make is stocknews else \
        InsightSentrySimulator([KEY], tick_interval=None, heartbeat_interval=None)
    delays: list[float] = []

    sleep = recording_sleep(delays)
    def policy() -> Backoff:
        return Backoff(base=1.0 / SCALE, cap=60.0 / SCALE, healthy_after=60.0 / SCALE, rng=random.Random(8))

    async with simulator as sim:
        proxy = await fault_proxy(sim.port)
        proxy.accept_then_close = True
        options = WebSocketOptions(connect_window=61.0 / SCALE, open_timeout=10.0 / SCALE)
        feed, status, _ = make(proxy.url("ws", path), backoff=policy(), options=options, sleep=sleep)
        async with running(feed):
            await proxy.wait_for(lambda: proxy.accepted >= 7, timeout=60.0 / SCALE + 3)
        elapsed = proxy.accepted_at[-1] - proxy.accepted_at[0]
    assert feed.transport.connections >= 6  # the handshakes did complete: the proxy closed after them
    expected = policy()
    assert delays == [expected.next_delay() for _ in delays]  # never reset by a handshake
    gaps = [b - a for a, b in zip(proxy.accepted_at, proxy.accepted_at[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, delays))  # each wait was really waited
    assert elapsed <= 60.0 / SCALE + 1 and proxy.accepted <= 10  # within the per-minute budget
