"""The StockNews simulator, driven over real loopback sockets with the websockets client.

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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from feeds.simulators import newsgen
from feeds.simulators.stocknews import StockNewsSimulator

TOKEN = "tok-1"
CONTROL = "ctl-secret"
TIMEOUT = 5.0
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DOC_DATA_FIELDS = {
    "ticker", "sentimentScore", "sentimentLabel", "confidence", "summary", "content", "category",
    "stockTickers", "keyFactors", "isStockRelated", "articleUrl", "articleSlug", "channel", "guild",
    "timestamp", "price", "priceChange", "priceCurrency", "priceFormatted", "volume", "marketCap", "sector",
}


class FakeClock:
    """Injected into the simulator so rate-limit windows can be crossed without waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def sim(clock: FakeClock) -> AsyncIterator[StockNewsSimulator]:
    async with StockNewsSimulator({TOKEN, "tok-2"}, news_interval=None, control_token=CONTROL,
                                  seed=7, clock=clock) as simulator:
        yield simulator


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def close_of(ws: ClientConnection) -> tuple[int | None, str | None]:
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def open_client(sim: StockNewsSimulator, token: str = TOKEN) -> ClientConnection:
    """Connect and consume the `connected` greeting."""
    ws = await connect(sim.url(token), open_timeout=TIMEOUT, close_timeout=1)
    assert (await recv_json(ws))["type"] == "connected"
    return ws


async def subscribe(sim: StockNewsSimulator, ws: ClientConnection, tickers: list[str]) -> None:
    before = len(sim.received)
    await ws.send(json.dumps({"type": "subscribe", "tickers": tickers}))
    await sim.wait_for(lambda: len(sim.received) > before)  # the server has applied it


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["?token=wrong", "?token=", ""])
async def test_bad_or_missing_token_is_closed_with_1008_and_json_reason(sim: StockNewsSimulator, query: str) -> None:
    async with connect(f"ws://127.0.0.1:{sim.port}/ws{query}", close_timeout=1) as ws:
        code, reason = await close_of(ws)
    assert code == 1008
    payload = json.loads(reason or "")
    assert payload["error"] == "Invalid token" and payload["message"]
    assert sim.open_connections == 0


@pytest.mark.asyncio
async def test_expired_token_is_closed_with_subscription_expired() -> None:
    expires = datetime(2026, 3, 6, tzinfo=timezone.utc)
    async with StockNewsSimulator({"old"}, news_interval=None, expires_at=expires) as sim:
        async with connect(sim.url("old"), close_timeout=1) as ws:
            code, reason = await close_of(ws)
    assert code == 1008
    assert json.loads(reason or "") == {
        "error": "Subscription expired", "message": "Your subscription has expired",
        "expiresAt": "2026-03-06T00:00:00.000Z"}


@pytest.mark.asyncio
async def test_expired_tokens_knob_and_expire_mid_connection(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim, "tok-2")
    await sim.expire("tok-2")
    code, reason = await close_of(ws)
    assert code == 1008 and json.loads(reason or "")["error"] == "Subscription expired"
    async with connect(sim.url("tok-2"), close_timeout=1) as again:
        assert (await close_of(again))[0] == 1008
    # Other tokens are unaffected.
    ok = await open_client(sim, TOKEN)
    await ok.close()


@pytest.mark.asyncio
async def test_good_token_gets_connected_with_configured_expiry() -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone.utc)
    async with StockNewsSimulator({TOKEN}, news_interval=None, expires_at=expires) as sim:
        async with connect(sim.url(TOKEN)) as ws:
            message = await recv_json(ws)
            await sim.wait_for(lambda: sim.open_connections == 1)
    assert message == {"type": "connected", "message": "WebSocket connection established",
                       "subscription": {"expiresAt": "2030-01-02T03:04:05.678Z", "isActive": True}}


@pytest.mark.asyncio
async def test_default_expiry_is_about_thirty_days_ahead(sim: StockNewsSimulator) -> None:
    async with connect(sim.url(TOKEN)) as ws:
        expires_at = (await recv_json(ws))["subscription"]["expiresAt"]
    assert ISO_MS.match(expires_at)
    delta = datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - datetime.now(timezone.utc)
    assert timedelta(days=29) < delta <= timedelta(days=30)


# -- subscriptions and news delivery ------------------------------------------------------------


@pytest.mark.asyncio
async def test_subscribe_replaces_the_ticker_set(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    await subscribe(sim, ws, ["AAPL"])
    await subscribe(sim, ws, ["tsla"])  # replaces AAPL; tickers are case-insensitive
    # Sentinel: the unsubscribed article goes out first; if it were delivered it would be first.
    # (AAPL's related tickers are tech peers, never TSLA.)
    sim.emit_news("AAPL")
    sent = sim.emit_news("TSLA")
    first = await recv_json(ws)
    assert first["type"] == "news" and first["data"]["ticker"] == "TSLA"
    assert first["data"]["articleSlug"] == sent["data"]["articleSlug"]
    await ws.close()


@pytest.mark.asyncio
async def test_without_subscribe_every_ticker_arrives_and_articles_are_shared(sim: StockNewsSimulator) -> None:
    a, b = await open_client(sim), await open_client(sim, "tok-2")
    await sim.wait_for(lambda: sim.open_connections == 2)
    sent = [sim.emit_news(t)["data"]["articleSlug"] for t in ("XOM", "PLTR")]  # PLTR: outside the universe
    got_a = [(await recv_json(a))["data"]["articleSlug"] for _ in sent]
    got_b = [(await recv_json(b))["data"]["articleSlug"] for _ in sent]
    assert got_a == got_b == sent
    await a.close()
    await b.close()


@pytest.mark.asyncio
async def test_automatic_news_follows_the_subscription() -> None:
    async with StockNewsSimulator({TOKEN}, news_interval=0.02, seed=1) as sim:
        ws = await open_client(sim)
        await subscribe(sim, ws, ["XOM"])
        news = [await recv_json(ws) for _ in range(6)]
        await ws.close()
    # Anything sent before the subscribe took effect may be for another ticker; the tail must not be.
    assert all(m["type"] == "news" for m in news)
    assert all("XOM" in m["data"]["stockTickers"] for m in news[-3:])


@pytest.mark.asyncio
async def test_news_message_matches_the_documented_shape(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    returned = sim.emit_news("AAPL")
    message = await recv_json(ws)
    await ws.close()
    assert message == returned
    assert set(message) == {"type", "timestamp", "data"} and message["type"] == "news"
    data = message["data"]
    assert set(data) == DOC_DATA_FIELDS
    assert data["ticker"] == "AAPL" and data["stockTickers"][0] == "AAPL"
    assert isinstance(data["sentimentScore"], int) and -100 <= data["sentimentScore"] <= 100
    assert data["sentimentLabel"] == newsgen.sentiment_label(data["sentimentScore"])
    assert isinstance(data["confidence"], int) and 0 <= data["confidence"] <= 100
    assert data["category"] in {"earnings", "merger", "product", "regulatory", "analyst", "macro", "management"}
    assert data["keyFactors"] and all(isinstance(f, str) for f in data["keyFactors"])
    assert data["isStockRelated"] in (True, False)
    assert data["articleUrl"] == f"https://stocknews.live/news/AAPL/{data['articleSlug']}"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", data["articleSlug"])
    assert ISO_MS.match(message["timestamp"]) and ISO_MS.match(data["timestamp"])
    assert isinstance(data["price"], float) and data["price"] > 0
    assert data["priceCurrency"] == "USD" and data["sector"] == "Technology"
    sign = "+" if data["priceChange"] >= 0 else "-"
    assert data["priceFormatted"] == f"${data['price']:,.2f} ({sign}{abs(data['priceChange']):g}%)"
    assert isinstance(data["volume"], int) and data["volume"] > 0
    assert re.fullmatch(r"\d+\.\dT", data["marketCap"])  # Apple is a trillion-dollar company
    assert data["content"].startswith(data["summary"])


@pytest.mark.asyncio
async def test_emit_news_overrides_and_consistent_sentiment(sim: StockNewsSimulator) -> None:
    message = sim.emit_news("nvda", summary="Custom headline", sentimentScore=-75, category="earnings")
    data = message["data"]
    assert data["ticker"] == "NVDA" and data["summary"] == "Custom headline"
    assert data["sentimentScore"] == -75 and data["sentimentLabel"] == "Very Bearish"
    assert data["category"] == "earnings"


def test_generated_content_is_consistent_over_many_articles() -> None:
    rng = random.Random(42)
    now = datetime(2026, 2, 6, 12, 34, 56, 789_000, tzinfo=timezone.utc)
    slugs = set()
    for seq in range(500):
        company = newsgen.UNIVERSE[rng.choice(sorted(newsgen.UNIVERSE))]
        category, score = newsgen.random_category(rng), newsgen.random_score(rng)
        data = newsgen.generate_article(
            rng, company, newsgen.initial_quote(rng, company), now=now, seq=seq,
            related=newsgen.pick_related(rng, company, category), score=score, category=category)
        assert data["sentimentLabel"] == newsgen.sentiment_label(score)
        assert "{" not in data["summary"]  # every placeholder filled
        assert len(data["stockTickers"]) == len(set(data["stockTickers"])) <= 2
        if category == "merger":
            assert len(data["stockTickers"]) == 2
        slugs.add(data["articleSlug"])
    assert len(slugs) == 500
    assert [newsgen.sentiment_label(s) for s in (-60, -59, -20, -19, 19, 20, 59, 60)] == [
        "Very Bearish", "Bearish", "Bearish", "Neutral", "Neutral", "Bullish", "Bullish", "Very Bullish"]
    assert newsgen.format_price(175.5, 2.5) == "$175.50 (+2.5%)"
    assert newsgen.format_market_cap(2.8e12) == "2.8T"
    assert newsgen.iso_ms(now) == "2026-02-06T12:34:56.789Z"


# -- client messages ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_invalid_messages_get_an_error_and_keep_the_connection(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    for bad in ["not json", json.dumps({"type": "bogus"}), json.dumps({"type": "subscribe", "tickers": "AAPL"})]:
        await ws.send(bad)
        reply = await recv_json(ws)
        assert reply["type"] == "error" and reply["error"] == "Invalid message" and reply["message"]
    sim.emit_news("MSFT")
    assert (await recv_json(ws))["data"]["ticker"] == "MSFT"  # still open, still unfiltered
    assert sim.received[0] == (1, "not json")
    assert sim.received[1] == (1, {"type": "bogus"})
    await ws.close()


@pytest.mark.asyncio
async def test_ping_gets_no_reply_by_default(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    await ws.send(json.dumps({"type": "ping"}))
    await sim.wait_for(lambda: len(sim.received) == 1)
    sim.emit_news("AAPL")  # sentinel: a pong would have arrived before it
    assert (await recv_json(ws))["type"] == "news"
    await ws.close()


@pytest.mark.asyncio
async def test_answer_pings_knob_sends_pong() -> None:
    async with StockNewsSimulator({TOKEN}, news_interval=None, answer_pings=True) as sim:
        ws = await open_client(sim)
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}
        await ws.close()


# -- rate limits --------------------------------------------------------------------------------


async def expect_rate_limit_close(ws: ClientConnection, which: str) -> None:
    error = await recv_json(ws)
    assert error == {"type": "error", "error": "Rate limit exceeded",
                     "message": f"Too many {which}. Please slow down."}
    code, reason = await close_of(ws)
    assert code == 1008 and json.loads(reason or "") == {"error": "Rate limit exceeded"}


@pytest.mark.asyncio
async def test_eleventh_subscribe_in_a_window_is_rejected(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    for _ in range(11):
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["AAPL"]}))
    await expect_rate_limit_close(ws, "subscribe messages")


@pytest.mark.asyncio
async def test_subscribe_window_slides(sim: StockNewsSimulator, clock: FakeClock) -> None:
    ws = await open_client(sim)
    for _ in range(10):
        await subscribe(sim, ws, ["AAPL"])
    clock.now += 60.5  # the first ten have left the 60 s window
    for _ in range(10):
        await subscribe(sim, ws, ["AAPL"])
    sim.emit_news("AAPL")  # still open: nothing but news has been sent
    assert (await recv_json(ws))["type"] == "news"
    await ws.send(json.dumps({"type": "subscribe", "tickers": ["AAPL"]}))
    await expect_rate_limit_close(ws, "subscribe messages")


@pytest.mark.asyncio
async def test_twenty_first_ping_is_rejected(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    for _ in range(21):
        await ws.send(json.dumps({"type": "ping"}))
    await expect_rate_limit_close(ws, "ping messages")


@pytest.mark.asyncio
async def test_thirty_first_message_hits_the_total_limit(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    kinds = ["subscribe"] * 10 + ["ping"] * 20  # each within its own limit: 30 in total
    for kind in kinds + ["ping"]:
        await ws.send(json.dumps({"type": kind, "tickers": []} if kind == "subscribe" else {"type": kind}))
    await expect_rate_limit_close(ws, "messages")


@pytest.mark.asyncio
async def test_eleventh_connection_attempt_per_ip_gets_429(sim: StockNewsSimulator, clock: FakeClock) -> None:
    for _ in range(10):  # bad tokens still count as attempts and hold no concurrency slot
        async with connect(sim.url("bad"), close_timeout=1) as ws:
            assert (await close_of(ws))[0] == 1008
    with pytest.raises(InvalidStatus) as excinfo:
        await connect(sim.url(TOKEN), open_timeout=TIMEOUT)
    assert excinfo.value.response.status_code == 429
    assert sim.connection_attempts == 11
    clock.now += 61
    ws = await open_client(sim)  # window has slid past the earlier attempts
    await ws.close()


@pytest.mark.asyncio
async def test_sixth_concurrent_connection_per_token_gets_429(sim: StockNewsSimulator) -> None:
    clients = [await open_client(sim) for _ in range(5)]
    with pytest.raises(InvalidStatus) as excinfo:
        await connect(sim.url(TOKEN), open_timeout=TIMEOUT)
    assert excinfo.value.response.status_code == 429
    other = await open_client(sim, "tok-2")  # the limit is per token
    await clients.pop().close()
    await sim.wait_for(lambda: sim.open_connections == 5)
    clients.append(await open_client(sim))  # a slot freed up
    for ws in clients + [other]:
        await ws.close()


# -- failure-injection knobs --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_refuse_connections_answers_503(sim: StockNewsSimulator) -> None:
    sim.refuse_connections = True
    with pytest.raises(InvalidStatus) as excinfo:
        await connect(sim.url(TOKEN), open_timeout=TIMEOUT)
    assert excinfo.value.response.status_code == 503
    assert sim.connection_attempts == 1
    sim.refuse_connections = False
    ws = await open_client(sim)
    await ws.close()


@pytest.mark.asyncio
async def test_close_after_connect(sim: StockNewsSimulator) -> None:
    sim.close_after_connect = 1011
    async with connect(sim.url(TOKEN), close_timeout=1) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        assert (await close_of(ws))[0] == 1011


@pytest.mark.asyncio
async def test_close_all(sim: StockNewsSimulator) -> None:
    a, b = await open_client(sim), await open_client(sim, "tok-2")
    assert await sim.close_all(1012, "restart") == 2
    assert await close_of(a) == (1012, "restart")
    assert await close_of(b) == (1012, "restart")
    await sim.wait_for(lambda: sim.open_connections == 0)


@pytest.mark.asyncio
async def test_silent_sends_nothing_but_keeps_the_connection(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    sim.silent = True
    late = await connect(sim.url("tok-2"), open_timeout=TIMEOUT)  # handshake works, no greeting
    await sim.wait_for(lambda: sim.open_connections == 2)
    sim.emit_news("AAPL")
    await ws.send("not json")  # would normally earn an error reply
    await sim.wait_for(lambda: len(sim.received) == 1)
    sim.silent = False
    sent = sim.emit_news("MSFT")
    for client in (ws, late):  # sentinel: anything sent while silent would come first
        assert (await recv_json(client))["data"]["articleSlug"] == sent["data"]["articleSlug"]
        await client.close()


# -- HTTP control interface ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_control_requires_the_token(sim: StockNewsSimulator) -> None:
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for url in (f"{base}/emit?ticker=AAPL", f"{base}/emit?ticker=AAPL&token=wrong", f"{base}/refuse?on=1"):
            assert (await http.get(url)).status_code == 403
    assert sim.refuse_connections is False


@pytest.mark.asyncio
async def test_control_is_disabled_without_a_control_token() -> None:
    async with StockNewsSimulator({TOKEN}, news_interval=None) as sim:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.get(f"http://127.0.0.1:{sim.port}/control/emit?ticker=AAPL&token=")
    assert response.status_code == 403


@pytest.mark.asyncio
async def test_control_emit_close_refuse_silent(sim: StockNewsSimulator) -> None:
    ws = await open_client(sim)
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{base}/emit", params={
            "ticker": "TSLA", "summary": "Tesla test headline", "sentimentScore": "-30", "token": CONTROL})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        body = response.json()
        news = await recv_json(ws)
        assert news == body
        assert news["data"]["summary"] == "Tesla test headline" and news["data"]["sentimentScore"] == -30

        assert (await http.get(f"{base}/close?code=1011&token={CONTROL}")).json() == {"closed": 1}
        assert (await close_of(ws))[0] == 1011

        assert (await http.get(f"{base}/refuse?on=1&token={CONTROL}")).status_code == 200
        with pytest.raises(InvalidStatus) as excinfo:
            await connect(sim.url(TOKEN), open_timeout=TIMEOUT)
        assert excinfo.value.response.status_code == 503
        await http.get(f"{base}/refuse?on=0&token={CONTROL}")

        assert (await http.get(f"{base}/silent?on=1&token={CONTROL}")).json()["silent"] is True
        assert sim.silent is True
        assert (await http.get(f"{base}/emit?token={CONTROL}")).status_code == 400  # no ticker
        assert (await http.get(f"{base}/nope?token={CONTROL}")).status_code == 404


# -- management command -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_simulate_command_runs_until_sigterm() -> None:
    manage = Path(__file__).resolve().parents[3] / "manage.py"
    env = {**os.environ, "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(manage), "simulate", "stocknews", "--port", "0", "--token", TOKEN,
        "--news-interval", "0", "--control-token", CONTROL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        match = re.fullmatch(r"stocknews simulator listening on ws://127\.0\.0\.1:(\d+)/ws\n", line)
        assert match, line
        port = int(match.group(1))
        async with connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}") as ws:
            assert (await recv_json(ws))["type"] == "connected"
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                response = await http.get(f"http://127.0.0.1:{port}/control/emit?ticker=META&token={CONTROL}")
            assert response.status_code == 200
            assert (await recv_json(ws))["data"]["ticker"] == "META"
            proc.send_signal(signal.SIGTERM)
            assert (await close_of(ws))[0] == 1001  # server going away
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
