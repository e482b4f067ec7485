"""Flood knobs (feeds/simulators/flood.py): every simulator sends a bounded number of generated
frames as fast as its client reads them, or at a rate, and says beforehand what they hold.

Real loopback sockets; every wait is on a received frame or `sim.wait_for(...)`, bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from feeds.simulators.flood import FLOOD_MAX, flood_count, flood_rate
from feeds.simulators.insightsentry import InsightSentrySimulator
from feeds.simulators.knowsis import KnowsisSimulator
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.simulators.stocktwits import StockTwitsSimulator

TIMEOUT = 5.0
CONTROL = "ctl"


async def recv_json(ws) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


def test_counts_and_rates_are_bounded() -> None:
    assert flood_count("3") == 3 and flood_count(FLOOD_MAX) == FLOOD_MAX
    for bad in (0, -1, FLOOD_MAX + 1, "x"):
        with pytest.raises(ValueError):
            flood_count(bad)
    assert flood_rate("") is None and flood_rate(None) is None and flood_rate("20") == 20.0
    with pytest.raises(ValueError):
        flood_rate("-5")


@pytest.mark.asyncio
async def test_stocknews_flood_sends_what_it_announced_in_order() -> None:
    async with StockNewsSimulator(["tok"], news_interval=None, control_token=CONTROL, seed=3) as sim:
        async with connect(sim.url("tok")) as ws:
            assert (await recv_json(ws))["type"] == "connected"
            summary = sim.flood(40, tickers=["aapl", "MSFT"])
            articles = [await recv_json(ws) for _ in range(40)]
            await sim.wait_for(lambda: sim.flooding.done)
    assert summary["frames"] == summary["articles"] == summary["quotes"] == 40
    assert [a["data"]["ticker"] for a in articles] == ["AAPL", "MSFT"] * 20  # round robin
    assert summary["news"] == sum(len({a["data"]["ticker"], *a["data"]["stockTickers"]}) for a in articles)
    assert sim.flooding.as_dict() | {"seconds": None} == {"frames": 40, "rate": None, "sent": 40, "done": True,
                                                          "seconds": None}


@pytest.mark.asyncio
async def test_stocknews_flood_at_a_rate_stamps_each_article_with_its_write_time() -> None:
    async with StockNewsSimulator(["tok"], news_interval=None, control_token=CONTROL, seed=3) as sim:
        async with connect(sim.url("tok")) as ws:
            await recv_json(ws)
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                answer = await http.get(f"http://127.0.0.1:{sim.port}/control/flood",
                                        params={"token": CONTROL, "count": 5, "rate": 50, "stamp": 1})
                assert answer.status_code == 200 and answer.json()["frames"] == 5
                refused = await http.get(f"http://127.0.0.1:{sim.port}/control/flood",
                                         params={"token": CONTROL, "count": FLOOD_MAX + 1})
                assert refused.status_code == 400
            arrivals = []
            for _ in range(5):
                article = await recv_json(ws)
                arrivals.append((time.monotonic_ns(), article["data"]["articleSlug"]))
    stamps = []
    for n, (arrived, slug) in enumerate(arrivals):
        prefix, number, stamp = slug.split(":")
        assert (prefix, int(number)) == ("bench", n)
        assert int(stamp) <= arrived
        stamps.append(int(stamp))
    assert stamps == sorted(stamps) and (stamps[-1] - stamps[0]) / 1e9 >= 4 / 50 * 0.9  # paced, not a burst


@pytest.mark.asyncio
async def test_insightsentry_flood_of_quotes_or_bars_for_the_subscribed_codes() -> None:
    async with InsightSentrySimulator(["key"], control_token=CONTROL, seed=3, quote_shape="mixed",
                                      heartbeat_interval=None) as sim:
        sim.tick_interval = None  # what the `ticks` knob does: no automatic rounds
        async with connect(sim.url()) as ws:
            await recv_json(ws)  # greeting
            codes = ["NASDAQ:AAPL", "NYSE:DIS"]
            subs = [s for c in codes for s in ({"code": c, "type": "quote"},
                                               {"code": c, "type": "series", "interval_type": "minute"})]
            await ws.send(json.dumps({"api_key": "key", "subscriptions": subs}))
            await sim.wait_for(lambda: len(sim.subscriptions_of(1)) == 4)
            quotes = sim.flood(6, kind="quote")
            got = [await recv_json(ws) for _ in range(quotes["frames"])]
            await sim.wait_for(lambda: sim.flooding.done)
            bars = sim.flood(4, kind="series")
            got_bars = [await recv_json(ws) for _ in range(bars["frames"])]
    assert quotes == {"frames": 6, "ticks": 6, "quotes": 6, "bars": 0}
    flat = [m for m in got if "code" in m]
    envelopes = [m for m in got if "data" in m]
    assert flat and envelopes and len(flat) + len(envelopes) == 6  # the mixed shape, one quote per frame
    assert [m.get("code") or m["data"][0]["code"] for m in got] == codes * 3
    assert bars == {"frames": 4, "ticks": 4, "quotes": 0, "bars": 4}
    assert [m["code"] for m in got_bars] == codes * 2 and all(m["bar_type"] == "1m" for m in got_bars)


@pytest.mark.asyncio
async def test_insightsentry_flood_needs_a_subscription_and_ticks_can_be_paused_over_http() -> None:
    async with InsightSentrySimulator(["key"], control_token=CONTROL, seed=3) as sim:
        with pytest.raises(ValueError):
            sim.flood(5)
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            answer = await http.get(f"http://127.0.0.1:{sim.port}/control/ticks",
                                    params={"token": CONTROL, "interval": "0"})
            assert answer.status_code == 200 and answer.json()["tickInterval"] is None
            answer = await http.get(f"http://127.0.0.1:{sim.port}/control/ticks",
                                    params={"token": CONTROL, "interval": "0.5"})
            assert answer.json()["tickInterval"] == 0.5


@pytest.mark.asyncio
async def test_knowsis_flood_takes_the_events_in_turn_over_the_subscribed_channels() -> None:
    async with KnowsisSimulator("key", "secret", news_interval=None, control_token=CONTROL, seed=3) as sim:
        async with connect(sim.url()) as ws:
            assert (await recv_json(ws))["event"] == "pusher:connection_established"
            for channel in ("apple-inc", "tesla-inc"):
                await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
                assert (await recv_json(ws))["event"] == "pusher_internal:subscription_succeeded"
            summary = sim.flood(8, events=["datapoint", "price"])
            got = [await recv_json(ws) for _ in range(8)]
    assert summary == {"frames": 8, "events": {"datapoint": 4, "price": 4}}
    assert [(m["event"], m["channel"]) for m in got] == [
        ("datapoint", "apple-inc"), ("datapoint", "tesla-inc"), ("price", "apple-inc"), ("price", "tesla-inc")] * 2
    assert set(json.loads(got[0]["data"])) == {"sentiment", "volume"}
    assert json.loads(got[2]["data"])["previous_close"].count(".") == 1  # the documented string


@pytest.mark.asyncio
async def test_stocktwits_flood_queues_whole_messages_on_the_stream_and_interval_pauses_the_rest() -> None:
    async with StockTwitsSimulator(["u:p"], interval=0.05, control_token=CONTROL, seed=3,
                                   keepalive_interval=60) as sim:
        async with httpx.AsyncClient(auth=("u", "p"), timeout=TIMEOUT) as http:
            answer = await http.get(f"http://127.0.0.1:{sim.port}/control/interval",
                                    params={"token": CONTROL, "seconds": ""})
            assert answer.json()["interval"] is None  # automatic messages paused
            async with aconnect_sse(http, "GET", sim.url()) as source:
                await sim.wait_for(lambda: sim.open_streams == 1)
                summary = sim.flood(30)
                events = source.aiter_sse()
                messages = [json.loads((await asyncio.wait_for(anext(events), TIMEOUT)).data) for _ in range(30)]
    assert summary["messages"] == 30 and summary["last_seq_id"] == messages[-1]["seq_id"]
    assert summary["mentions"] == sum(len(m["symbols"]) for m in messages)
    assert [m["seq_id"] for m in messages] == sorted(m["seq_id"] for m in messages)
