"""The InsightSentry simulator over real loopback sockets, plus pure tests of `marketgen`.

No sleeps for synchronisation: every wait is on a condition (a received frame, a closed
socket, `sim.wait_for(...)`) bounded by a timeout, so a broken feature fails fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from feeds.simulators import marketgen
from feeds.simulators.insightsentry import FLAT_FIELDS, InsightSentrySimulator, build_from_options
from feeds.simulators.marketgen import BarAggregator, Interval
from tests.conftest import load_fixture_json

KEY = "key-1"
CONTROL = "ctl-secret"
TIMEOUT = 5.0
T0 = 1_738_845_270.0  # 2025-02-06 12:34:30 UTC: mid-minute, so a few ticks share one 1m bar
ENVELOPE_ITEM_FIELDS = set(load_fixture_json("insightsentry", "ws_quote__envelope.json")["data"][0])
SERIES_FIELDS = set(load_fixture_json("insightsentry", "ws_series.json"))


class FakeClock:
    """Wall-clock stand-in: bar boundaries are crossed by moving `now`, never by waiting."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def sim(clock: FakeClock) -> AsyncIterator[InsightSentrySimulator]:
    # No automatic ticks or heartbeats: every frame a test sees is one it caused.
    async with InsightSentrySimulator({KEY, "key-2"}, tick_interval=None, heartbeat_interval=None,
                                      control_token=CONTROL, seed=7, clock=clock) as simulator:
        yield simulator


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def close_of(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Drain frames until the socket closes (an undrained stream would stall the close)."""
    async with asyncio.timeout(TIMEOUT):
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


async def open_client(sim: InsightSentrySimulator) -> ClientConnection:
    """Connect and consume the greeting."""
    ws = await connect(sim.url(), open_timeout=TIMEOUT, close_timeout=1)
    assert await recv_json(ws) == {"message": "Connecting..."}
    return ws


async def subscribe(sim: InsightSentrySimulator, ws: ClientConnection, subs: list[dict[str, Any]],
                    key: str = KEY) -> None:
    before = len(sim.received)
    await ws.send(json.dumps({"api_key": key, "subscriptions": subs}))
    # A valid message is applied in the same step that records it, so this means "applied".
    await sim.wait_for(lambda: len(sim.received) > before)


def quote(code: str) -> dict[str, Any]:
    return {"code": code, "type": "quote"}


def series(code: str, unit: str = "minute", length: int = 1) -> dict[str, Any]:
    return {"code": code, "type": "series", "interval_type": unit, "interval_length": length}


# -- connection basics --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_greeting_and_counters(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await sim.wait_for(lambda: sim.open_connections == 1)
    assert sim.connection_attempts == 1 and sim.url() == f"ws://127.0.0.1:{sim.port}/live"
    await ws.close()
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_ping_gets_bare_pong_text(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "pong"
    assert sim.received == [(1, "ping")]
    await ws.close()


@pytest.mark.asyncio
async def test_heartbeat_carries_server_time_in_ms() -> None:
    async with InsightSentrySimulator({KEY}, tick_interval=None, heartbeat_interval=0.05) as sim:
        ws = await open_client(sim)
        beat = await recv_json(ws)
        await ws.close()
    assert set(beat) == {"server_time"}
    assert abs(beat["server_time"] / 1000 - datetime.now(timezone.utc).timestamp()) < 5


@pytest.mark.asyncio
async def test_unknown_path_is_404(sim: InsightSentrySimulator) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(f"http://127.0.0.1:{sim.port}/ws")).status_code == 404


# -- subscriptions and streaming ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_ticks_stream_both_quote_shapes_and_series_for_subscribed_codes_only() -> None:
    async with InsightSentrySimulator({KEY}, tick_interval=0.02, heartbeat_interval=None, seed=3) as sim:
        ws = await open_client(sim)
        other = await open_client(sim)
        await subscribe(sim, ws, [quote("NASDAQ:AAPL"), quote("NYSE:XOM"), series("NASDAQ:TSLA")])
        await subscribe(sim, other, [quote("NASDAQ:MSFT")])
        flats, envelopes, bars = [], [], []
        async with asyncio.timeout(TIMEOUT):
            while len(flats) < 4 or len(envelopes) < 2 or len(bars) < 2:
                message = await recv_json(ws)
                (bars if "series" in message else envelopes if "data" in message else flats).append(message)
        await ws.close()
        await other.close()
    assert {m["code"] for m in flats} == {"NASDAQ:AAPL", "NYSE:XOM"}
    assert all(tuple(m) == FLAT_FIELDS for m in flats)
    for envelope in envelopes:
        assert set(envelope) == {"last_update", "total_items", "data"}
        assert envelope["total_items"] == len(envelope["data"]) == 2  # both quotes of the round
        assert {i["code"] for i in envelope["data"]} == {"NASDAQ:AAPL", "NYSE:XOM"}
        for item in envelope["data"]:
            assert set(item) == ENVELOPE_ITEM_FIELDS
            assert item["status"] == "OPEN" and item["currency_code"] == "USD" and item["delay_seconds"] == 0
            assert item["bid"] < item["ask"] and (item["ask"] - item["bid"]) / item["bid"] < 0.001
            assert item["low_price"] <= item["last_price"] <= item["high_price"]
            assert item["change"] == round(item["last_price"] - item["prev_close_price"], 2)
            assert abs(envelope["last_update"] / 1000 - item["lp_time"]) < 2
    assert {m["code"] for m in bars} == {"NASDAQ:TSLA"} and all(set(m) == SERIES_FIELDS for m in bars)
    assert all(m["bar_type"] == "1m" and m["bar_end"] == m["series"][0]["time"] + 60 for m in bars)
    assert all(isinstance(m["lp_time"], int) and m["volume"] > 0 for m in flats)


@pytest.mark.asyncio
async def test_emit_quote_reaches_quote_subscribers_and_updates_their_bars(
        sim: InsightSentrySimulator, clock: FakeClock) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, [quote("NASDAQ:AAPL"), series("NASDAQ:AAPL")])
    closes, shapes = [], []
    for price in (230.0, 231.5, 229.25):
        sent = sim.emit_quote("NASDAQ:AAPL", price)
        assert await recv_json(ws) == sent
        shapes.append("envelope" if "data" in sent else "flat")
        bar = await recv_json(ws)
        assert bar["code"] == "NASDAQ:AAPL" and bar["bar_end"] == 1_738_845_300
        closes.append(bar["series"][0])
        clock.now += 5
    assert [b["close"] for b in closes] == [230.0, 231.5, 229.25]  # close moves with each tick
    assert closes[-1]["open"] == 230.0 and closes[-1]["high"] == 231.5 and closes[-1]["low"] == 229.25
    assert {b["time"] for b in closes} == {1_738_845_240}
    assert shapes == ["flat", "envelope", "flat"]  # quote_shape="mixed" alternates
    clock.now = 1_738_845_300  # the minute is over: the next trade opens a new bar
    sim.emit_quote("NASDAQ:AAPL", 228.0)
    await recv_json(ws)
    bar = await recv_json(ws)
    assert bar["series"] == [{"time": 1_738_845_300, "open": 228.0, "high": 228.0, "low": 228.0,
                              "close": 228.0, "volume": bar["series"][0]["volume"]}]
    assert bar["bar_end"] == 1_738_845_360
    await ws.close()


@pytest.mark.asyncio
async def test_quote_shape_and_delays_knobs(sim: InsightSentrySimulator) -> None:
    sim.quote_shape, sim.delays = "envelope", {"NYSE:XOM": 900}
    ws = await open_client(sim)
    await subscribe(sim, ws, [quote("NYSE:XOM"), quote("NASDAQ:AAPL")])
    for code, delay in (("NYSE:XOM", 900), ("NASDAQ:AAPL", 0)):
        message = sim.emit_quote(code, 110.0, volume=None)
        assert await recv_json(ws) == message and message["total_items"] == 1
        assert message["data"][0]["delay_seconds"] == delay and message["data"][0]["volume"] is None
    sim.quote_shape = "flat"
    flat = sim.emit_quote("NYSE:XOM", 111.0)
    assert await recv_json(ws) == flat and tuple(flat) == FLAT_FIELDS
    await ws.close()


@pytest.mark.asyncio
async def test_subscribe_replaces_the_whole_set(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, [quote("NASDAQ:AAPL"), series("NASDAQ:AAPL")])
    await subscribe(sim, ws, [{"code": "NASDAQ:TSLA", "type": "quote"}])
    assert sim.subscriptions_of(1) == [{"code": "NASDAQ:TSLA", "type": "quote"}]
    # Sentinel: the unsubscribed code goes out first; if it were delivered it would arrive first.
    sim.emit_quote("NASDAQ:AAPL", 200.0)
    sent = sim.emit_quote("NASDAQ:TSLA", 300.0)
    assert await recv_json(ws) == sent
    await ws.close()
    await sim.wait_for(lambda: sim.subscriptions_of(1) == [])


@pytest.mark.asyncio
async def test_defaults_and_newer_spelling_are_accepted(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, [{"code": "NASDAQ:AAPL"},
                              {"code": "NYSE:XOM", "bar_type": "minute", "bar_interval": 5, "extended": True},
                              {"code": "NYSE:BRK.B", "bar_type": "hour"}])
    assert sim.subscriptions_of(1) == [series("NASDAQ:AAPL"), series("NYSE:XOM", "minute", 5),
                                       series("NYSE:BRK.B", "hour")]
    sim.emit_quote("NYSE:XOM", 110.0)
    bar = await recv_json(ws)
    assert bar["bar_type"] == "5m" and bar["series"][0]["time"] == 1_738_845_000
    assert bar["bar_end"] == 1_738_845_300
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "pong"  # still open
    await ws.close()


def _sub_message(*subs: dict[str, Any], **top: Any) -> str:
    return json.dumps({"api_key": KEY, "subscriptions": list(subs), **top})


INVALID = {
    "code without exchange": _sub_message(quote("AAPL")),
    "lowercase code": _sub_message(quote("nasdaq:aapl")),
    "two colons": _sub_message(quote("NASDAQ:AAPL:X")),
    "space in code": _sub_message(quote("NASDAQ:BRK B")),
    "bad type": _sub_message({"code": "NASDAQ:AAPL", "type": "trades"}),
    "bad interval_type": _sub_message(series("NASDAQ:AAPL", "minutes")),
    "tick bar_type": _sub_message({"code": "NASDAQ:AAPL", "bar_type": "tick"}),
    "second with length 2": _sub_message(series("NASDAQ:AAPL", "second", 2)),
    "minute length 525600": _sub_message(series("NASDAQ:AAPL", "minute", 525600)),
    "month length 12": _sub_message(series("NASDAQ:AAPL", "month", 12)),
    "length 0": _sub_message(series("NASDAQ:AAPL", "minute", 0)),
    "string length": _sub_message(series("NASDAQ:AAPL", "minute", "5")),  # type: ignore[arg-type]
    "mixed spellings": _sub_message({"code": "NASDAQ:AAPL", "interval_type": "minute", "bar_interval": 5}),
    "unknown subscription key": _sub_message({"code": "NASDAQ:AAPL", "interval": "minute"}),
    "empty list": _sub_message(),
    "subscriptions not a list": json.dumps({"api_key": KEY, "subscriptions": quote("NASDAQ:AAPL")}),
    "unknown top-level key": _sub_message(quote("NASDAQ:AAPL"), action="subscribe"),
    "bad JSON": "{not json",
    "JSON array": json.dumps([quote("NASDAQ:AAPL")]),
    "missing api_key": json.dumps({"subscriptions": [quote("NASDAQ:AAPL")]}),
    "wrong api_key": json.dumps({"api_key": "nope", "subscriptions": [quote("NASDAQ:AAPL")]}),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_message_drops_the_connection(sim: InsightSentrySimulator, case: str) -> None:
    ws = await open_client(sim)
    await ws.send(INVALID[case])
    error = await recv_json(ws)
    expected = "invalid_api_key" if "api_key" in case else "invalid_message"
    assert error["error"] == expected and error["message"]
    assert await close_of(ws) == (1008, expected)
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_binary_frame_closes_with_1003(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await ws.send(_sub_message(quote("NASDAQ:AAPL")).encode())
    assert (await recv_json(ws))["error"] == "invalid_message"
    assert (await close_of(ws))[0] == 1003


@pytest.mark.asyncio
async def test_limits_just_inside_the_rules_keep_the_connection(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    for sub in (series("NASDAQ:AAPL", "second", 1), series("NASDAQ:AAPL", "minute", 525599),
                series("NASDAQ:AAPL", "day", 364), series("NASDAQ:AAPL", "week", 51),
                series("NASDAQ:AAPL", "month", 11), series("NASDAQ:AAPL", "hour", 8759),
                quote("OTC:A_B-1"), quote("CME_MINI:ES1!")):
        await subscribe(sim, ws, [sub])
        assert sim.subscriptions_of(1) == [sub]
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "pong"
    await ws.close()


@pytest.mark.asyncio
async def test_subscribes_beyond_the_budget_are_ignored() -> None:
    async with InsightSentrySimulator({KEY}, tick_interval=None, heartbeat_interval=None,
                                      max_subscribes=2) as sim:
        ws = await open_client(sim)
        for code in ("NASDAQ:AAPL", "NASDAQ:MSFT", "NASDAQ:TSLA"):
            await subscribe(sim, ws, [quote(code)])
        assert sim.subscriptions_of(1) == [quote("NASDAQ:MSFT")]  # the third was ignored
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "pong"  # the feed goes on
        await ws.close()


# -- per-key limits and server-side errors ------------------------------------------------------


@pytest.mark.asyncio
async def test_third_connection_for_a_key_gets_max_connections_exceeded(sim: InsightSentrySimulator) -> None:
    clients = [await open_client(sim) for _ in range(3)]
    for ws in clients[:2]:
        await subscribe(sim, ws, [quote("NASDAQ:AAPL")])
    await clients[2].send(_sub_message(quote("NASDAQ:AAPL")))
    assert (await recv_json(clients[2]))["error"] == "max_connections_exceeded"
    assert await close_of(clients[2]) == (1008, "max_connections_exceeded")
    await subscribe(sim, clients[1], [quote("NASDAQ:MSFT")])  # re-subscribing keeps its slot
    other = await open_client(sim)
    await subscribe(sim, other, [quote("NASDAQ:AAPL")], key="key-2")  # the limit is per key
    await clients[0].close()
    await sim.wait_for(lambda: sim.open_connections == 2)
    again = await open_client(sim)
    await subscribe(sim, again, [quote("NASDAQ:AAPL")])  # a slot freed up
    assert sim.emit_quote("NASDAQ:AAPL", 1.0) == await recv_json(again)
    for ws in (clients[1], other, again):
        await ws.close()


@pytest.mark.asyncio
async def test_evict_closes_only_that_keys_connections(sim: InsightSentrySimulator) -> None:
    a, b, other = await open_client(sim), await open_client(sim), await open_client(sim)
    for ws, key in ((a, KEY), (b, KEY), (other, "key-2")):
        await subscribe(sim, ws, [quote("NASDAQ:AAPL")], key=key)
    assert await sim.evict(KEY) == 2
    for ws in (a, b):
        assert (await recv_json(ws))["error"] == "connection_evicted"
        assert await close_of(ws) == (1008, "connection_evicted")
    assert sim.emit_quote("NASDAQ:AAPL", 5.0) == await recv_json(other)
    await other.close()


@pytest.mark.asyncio
async def test_send_error_and_close_all(sim: InsightSentrySimulator) -> None:
    a, b = await open_client(sim), await open_client(sim)
    assert sim.send_error("server_busy", message="Try later") == 2
    for ws in (a, b):
        assert await recv_json(ws) == {"error": "server_busy", "message": "Try later"}
    assert await sim.close_all(1012, "restart") == 2
    assert await close_of(a) == (1012, "restart") and await close_of(b) == (1012, "restart")


@pytest.mark.asyncio
async def test_drop_all_aborts_without_a_close_frame(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await sim.wait_for(lambda: sim.open_connections == 1)
    assert sim.drop_all() == 1
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code == 1006  # abnormal closure: no close frame was received
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_silent_sends_nothing_but_keeps_the_connection(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, [quote("NASDAQ:AAPL")])
    sim.silent = True
    late = await connect(sim.url(), open_timeout=TIMEOUT)  # handshake works, no greeting
    await sim.wait_for(lambda: sim.open_connections == 2)
    sim.emit_quote("NASDAQ:AAPL", 100.0)
    sim.send_error("server_busy")
    for frame in ("ping", "{not json"):  # would normally earn a pong and a dropped connection
        await ws.send(frame)
    await sim.wait_for(lambda: len(sim.received) == 3)
    sim.silent = False
    sent = sim.emit_quote("NASDAQ:AAPL", 101.0)
    assert await recv_json(ws) == sent  # sentinel: anything sent while silent would come first
    sim.send_error("server_busy")
    assert await recv_json(late) == {"error": "server_busy"}
    await ws.close()
    await late.close()


# -- HTTP control interface ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_control_requires_the_token(sim: InsightSentrySimulator) -> None:
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for url in (f"{base}/silent?on=1", f"{base}/silent?on=1&token=wrong", f"{base}/stats"):
            assert (await http.get(url)).status_code == 403
    assert sim.silent is False


@pytest.mark.asyncio
async def test_control_actions(sim: InsightSentrySimulator) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, [quote("NASDAQ:AAPL")])
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{base}/emit_quote", params={"code": "NASDAQ:AAPL", "price": "123.45",
                                                                "volume": "1000", "token": CONTROL})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert await recv_json(ws) == response.json()
        assert response.json()["last_price"] == 123.45 and response.json()["volume"] == 1000
        assert (await http.get(f"{base}/error?error=server_busy&token={CONTROL}")).json() == {"sent": 1}
        assert await recv_json(ws) == {"error": "server_busy"}
        stats = (await http.get(f"{base}/stats?token={CONTROL}")).json()
        assert stats["openConnections"] == 1 and stats["subscriptions"] == {"1": [quote("NASDAQ:AAPL")]}
        assert (await http.get(f"{base}/silent?on=1&token={CONTROL}")).json()["silent"] is True
        assert (await http.get(f"{base}/silent?on=0&token={CONTROL}")).json()["silent"] is False
        assert (await http.get(f"{base}/emit_quote?code=NASDAQ:AAPL&token={CONTROL}")).status_code == 400
        assert (await http.get(f"{base}/nope?token={CONTROL}")).status_code == 404
        assert (await http.get(f"{base}/close?code=1011&token={CONTROL}")).json() == {"closed": 1}
        assert (await close_of(ws))[0] == 1011
        dropped = await open_client(sim)
        assert (await http.get(f"{base}/drop?token={CONTROL}")).json() == {"dropped": 1}
        assert (await close_of(dropped))[0] == 1006


# -- market data (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "start", "end"), [
    (Interval("second"), T0, T0 + 1),
    (Interval("minute"), 1_738_845_240, 1_738_845_300),
    (Interval("minute", 5), 1_738_845_000, 1_738_845_300),
    (Interval("hour"), 1_738_843_200, 1_738_846_800),
    (Interval("day"), 1_738_800_000, 1_738_886_400),  # 2025-02-06 00:00 UTC
    (Interval("week"), 1_738_540_800, 1_739_145_600),  # Monday 2025-02-03
    (Interval("month"), 1_738_368_000, 1_740_787_200),  # 2025-02-01 .. 2025-03-01
    (Interval("month", 3), 1_735_689_600, 1_743_465_600),  # the quarter 2025-01-01 .. 2025-04-01
])
def test_bar_start_alignment(interval: Interval, start: float, end: float) -> None:
    assert interval.start_of(T0 + 0.4) == start and interval.end_of(int(start)) == end


@pytest.mark.parametrize("interval", [Interval("minute"), Interval("minute", 5), Interval("hour"), Interval("day")])
def test_bar_aggregator_folds_ticks_until_the_bar_ends(interval: Interval) -> None:
    agg = BarAggregator(interval)
    start = interval.start_of(T0)
    end = interval.end_of(start)
    ticks = [(start + 1, 100.0, 10), (start + 2, 103.0, 5), (start + 3, 98.5, 7), (end - 0.5, 101.0, 3)]
    closes = [agg.add(t, p, v).close for t, p, v in ticks]  # type: ignore[union-attr]
    assert closes == [100.0, 103.0, 98.5, 101.0]
    bar = agg.bars[start]
    assert bar.as_dict() == {"time": start, "open": 100.0, "high": 103.0, "low": 98.5, "close": 101.0,
                             "volume": 25}
    assert agg.add(end - 0.1, 101.0, 0) is None  # nothing changed: no update to send
    nxt = agg.add(end, 102.0, 4)
    assert nxt is not None and nxt.time == end and (nxt.open, nxt.close, nxt.volume) == (102.0, 102.0, 4)
    assert agg.current is nxt and agg.bars[start].close == 101.0  # the finished bar stays put
    assert [Interval("minute", 5).bar_type, Interval("hour").bar_type, Interval("day").bar_type,
            Interval("week", 2).bar_type, Interval("month").bar_type, Interval("second").bar_type] == [
        "5m", "1h", "1D", "2W", "1M", "1s"]


def test_bar_aggregator_keeps_a_bounded_history() -> None:
    agg = BarAggregator(Interval("second"), keep=3)
    for i in range(5):
        agg.add(T0 + i, 10.0 + i, 1)
    assert sorted(agg.bars) == [T0 + 2, T0 + 3, T0 + 4]
    assert agg.add(T0, 1.0, 1) is None  # too old to matter


def test_market_prices_are_plausible_and_reproducible() -> None:
    ticks_a = _tape(random.Random(5))
    assert ticks_a == _tape(random.Random(5))
    by_code: dict[str, list[marketgen.Quote]] = {}
    for tick in ticks_a:
        by_code.setdefault(tick.code, []).append(tick)
    aapl = by_code["NASDAQ:AAPL"]
    assert all(150 < t.last_price < 350 for t in aapl)
    assert all(0 < (t.ask - t.bid) / t.bid < 0.0005 for t in aapl)  # a few bps for a mega cap
    assert all(t.bid <= t.last_price <= t.ask for t in ticks_a)
    assert all(b.volume - a.volume == b.size > 0 for a, b in zip(aapl, aapl[1:]))
    assert max(abs(b.last_price / a.last_price - 1) for a, b in zip(aapl, aapl[1:])) < 0.005
    assert 1e12 < aapl[-1].market_cap < 1e13
    unknown = by_code["BINANCE:XYZ"]  # outside the universe: a stand-in, still a sane quote
    assert unknown[0].prev_close_price > 0 and unknown[0].bid < unknown[0].ask
    assert "NYSE:XOM" in marketgen.UNIVERSE_CODES and "NASDAQ:AAPL" in marketgen.UNIVERSE_CODES


def _tape(rng: random.Random) -> list[marketgen.Quote]:
    market = marketgen.Market(rng)
    return [market.tick(code, T0 + i * 0.25) for i in range(200) for code in ("NASDAQ:AAPL", "BINANCE:XYZ")]


def test_forced_price_sets_trade_and_book() -> None:
    market = marketgen.Market(random.Random(1))
    tick = market.tick("NYSE:PFE", T0, price=25.0)
    assert tick.last_price == 25.0 and tick.bid <= 25.0 <= tick.ask and tick.ask - tick.bid < 0.015


# -- build_from_options and the management command ----------------------------------------------


def test_build_from_options_defaults() -> None:
    sim = build_from_options({"host": "127.0.0.1", "port": 0, "token": None, "control_token": None,
                              "seed": 1, "news_interval": 0})
    assert sim.api_keys == {"demo-key"} and sim.tick_interval == 0.25
    sim = build_from_options({"token": ["k"], "news_interval": 1.5, "control_token": "c"})
    assert sim.api_keys == {"k"} and sim.tick_interval == 1.5 and sim.control_token == "c"


@pytest.mark.asyncio
async def test_simulate_command_streams_until_sigterm() -> None:
    manage = Path(__file__).resolve().parents[3] / "manage.py"
    env = {**os.environ, "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(manage), "simulate", "insightsentry", "--port", "0", "--token", "k",
        "--news-interval", "0.05", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        match = re.fullmatch(r"insightsentry simulator listening on ws://127\.0\.0\.1:(\d+)/live\n", line)
        assert match, line
        async with connect(f"ws://127.0.0.1:{match.group(1)}/live") as ws:
            assert await recv_json(ws) == {"message": "Connecting..."}
            await ws.send(json.dumps({"api_key": "k", "subscriptions": [quote("NASDAQ:NVDA")]}))
            assert "NASDAQ:NVDA" in json.dumps(await recv_json(ws))
            proc.send_signal(signal.SIGTERM)
            assert (await close_of(ws))[0] == 1001  # server going away
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
