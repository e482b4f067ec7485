"""Production mode: Daphne, the StockNews worker and the simulator as separate processes on
the real Redis layer. A news item reaches the watching team's socket and no other team's."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import time

import httpx
import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from feeds.crypto import decrypt

from tests.e2e.conftest import Stack, wait_until

pytestmark = pytest.mark.stack


_clients: dict[str, object] = {}


async def open_stream(stack: Stack, username: str, *, open_timeout: float = 30):
    client = _clients.get(username) or _clients.setdefault(username, stack.login(username))
    watchlists = [w["id"] for w in client.get("/api/board/").json()["watchlists"]]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    ws = await connect(stack.base_url.replace("http", "ws") + "/ws/stream/",
                       additional_headers={"Cookie": cookie}, origin=stack.base_url, open_timeout=open_timeout)
    await ws.send(json.dumps({"type": "watch", "watchlists": watchlists}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ack["type"] == "watching" and ack["watchlists"] == watchlists
    return ws


ALPHA = {"AAPL", "MSFT", "NVDA", "TSLA"}
BETA = {"JPM", "XOM"}


async def next_event(ws, *, allowed_symbols: set[str], match, timeout: float = 30) -> dict:
    """The next event `match` accepts; every event seen on the way must be for an allowed symbol."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] != "event":
                continue
            assert message["event"]["symbol"] in allowed_symbols, f"leaked: {message}"
            if match(message["event"]):
                return message["event"]


async def next_news(ws, *, allowed_symbols: set[str]) -> dict:
    return await next_event(ws, allowed_symbols=allowed_symbols, match=lambda e: e["kind"] == "news")


def test_news_reaches_its_team_only(stack: Stack):
    async def scenario():
        alice = await open_stream(stack, "alice")  # Alpha Desk: AAPL, MSFT, NVDA, TSLA
        carol = await open_stream(stack, "carol")  # Beta Fund: JPM, XOM
        try:
            aapl = stack.control("emit", ticker="AAPL", summary="Alpha-only news item", stockTickers="AAPL")
            # Sentinel for carol: published after the AAPL item, so a leak would arrive first.
            xom = stack.control("emit", ticker="XOM", summary="Beta sentinel", stockTickers="XOM")
            got_alice = await next_news(alice, allowed_symbols=ALPHA)
            got_carol = await next_news(carol, allowed_symbols=BETA)
        finally:
            await alice.close()
            await carol.close()
        assert got_alice["kind"] == "news" and got_alice["symbol"] == "AAPL"
        assert got_alice["external_id"] == aapl["data"]["articleSlug"]
        assert got_alice["headline"] == "Alpha-only news item"
        assert got_carol["external_id"] == xom["data"]["articleSlug"]

    asyncio.run(scenario())


def test_insightsentry_quotes_and_bars_reach_the_team_through_redis(stack: Stack):
    async def scenario():
        alice = await open_stream(stack, "alice")
        carol = await open_stream(stack, "carol")
        try:
            # The simulator keeps ticking from the emitted price, and the pipeline conflates quotes
            # per instrument, so what arrives is "AAPL near 4242", not necessarily that exact tick.
            stack.control("emit_quote", sim="insightsentry", code="NASDAQ:AAPL", price="4242.42")
            near = lambda e, field: e["symbol"] == "AAPL" and e[field] is not None and e[field] > 4000  # noqa: E731
            quote = await next_event(alice, allowed_symbols=ALPHA,
                                     match=lambda e: e["kind"] == "quote" and e["provider"] == "insightsentry"
                                     and near(e, "price"))
            bar = await next_event(alice, allowed_symbols=ALPHA, match=lambda e: e["kind"] == "bar" and near(e, "high"))
            # Carol's stream carries her own instruments' ticks, and never AAPL's.
            carol_quote = await next_event(carol, allowed_symbols=BETA, match=lambda e: e["kind"] == "quote")
        finally:
            await alice.close()
            await carol.close()
        assert quote["symbol"] == "AAPL" and quote["provider"] == "insightsentry"
        assert bar["interval"] == "1m" and bar["high"] > 4000
        assert carol_quote["symbol"] in BETA

    asyncio.run(scenario())


def test_stocktwits_crowd_sentiment_reaches_the_team_through_redis(stack: Stack):
    async def scenario():
        alice = await open_stream(stack, "alice")
        try:
            stack.control("emit", sim="stocktwits", symbols="NVDA", sentiment_score="0.9")
            return await next_event(alice, allowed_symbols=ALPHA,
                                    match=lambda e: e["kind"] == "sentiment" and e["symbol"] == "NVDA")
        finally:
            await alice.close()

    sample = asyncio.run(scenario())
    assert sample["provider"] == "stocktwits" and sample["volume"] >= 1


def test_a_knowsis_alert_and_its_revocation_reach_the_team_through_redis(stack: Stack):
    async def scenario():
        alice = await open_stream(stack, "alice")
        carol = await open_stream(stack, "carol")
        try:
            alert_id = "5760257000000000000000aa"
            stack.control("emit", sim="knowsis", channel="apple-inc", event="anomaly_alert_triggered",
                          data=json.dumps({"alert_id": alert_id, "trigger_time": "2026-11-21T10:00:00",
                                           "credibility": "high"}))
            stack.control("emit", sim="knowsis", channel="apple-inc", event="anomaly_alert_removed",
                          data=json.dumps({"alert_id": alert_id}))
            stack.control("emit", sim="knowsis", channel="exxon-mobil", event="datapoint",
                          data=json.dumps({"sentiment": 1, "volume": 1.5}))  # carol's sentinel
            alert = await next_event(alice, allowed_symbols=ALPHA, match=lambda e: e["kind"] == "alert")
            revoked = await next_event(alice, allowed_symbols=ALPHA, match=lambda e: e["kind"] == "alert_revoked")
            sentinel = await next_event(carol, allowed_symbols=BETA,
                                        match=lambda e: e["kind"] == "sentiment" and e["provider"] == "knowsis")
        finally:
            await alice.close()
            await carol.close()
        assert alert["external_id"] == revoked["external_id"] == alert_id
        assert alert["level"] == "high" and alert["symbol"] == "AAPL"
        assert sentinel["symbol"] == "XOM"

    asyncio.run(scenario())


def test_trendspottr_alerts_reach_the_owning_team_once_even_when_replayed_at_once(stack: Stack):
    [(alpha_alert,)] = stack.query("SELECT a.remote_alert_id FROM dashboard_trendalertdefinition a "
                                   "JOIN dashboard_team t ON t.id = a.team_id WHERE t.name = 'Alpha Desk'")
    [(beta_alert,)] = stack.query("SELECT a.remote_alert_id FROM dashboard_trendalertdefinition a "
                                  "JOIN dashboard_team t ON t.id = a.team_id WHERE t.name = 'Beta Fund'")
    is_alert = lambda e: e["kind"] == "alert" and e["provider"] == "trendspottr"  # noqa: E731

    async def scenario():
        alice = await open_stream(stack, "alice")
        carol = await open_stream(stack, "carol")
        try:
            event = stack.control("deliver", sim="trendspottr", alert_id=alpha_alert)
            first = await next_event(alice, allowed_symbols=ALPHA | {""}, match=is_alert)
            # A new event arriving five times at once (retries racing each other): one alert, one push.
            fresh = {**event, "event_id": event["event_id"] + 1_000_000,
                     "data": {**event["data"], "notification_id": event["data"]["notification_id"] + 1_000_000}}
            async with httpx.AsyncClient(base_url=stack.base_url) as client:
                # Stored encrypted; the stack's processes share this process's FIELD_ENCRYPTION_KEYS.
                url = event_url = decrypt(stack.query("SELECT public_url FROM feeds_webhookconfig")[0][0])
                replies = await asyncio.gather(*(client.post(url, json={**fresh, "attempts": n}) for n in range(5)))
            racing = await next_event(alice, allowed_symbols=ALPHA | {""}, match=is_alert)
            again = stack.control("deliver", sim="trendspottr", alert_id=alpha_alert)  # alice's sentinel
            second = await next_event(alice, allowed_symbols=ALPHA | {""}, match=is_alert)
            beta = stack.control("deliver", sim="trendspottr", alert_id=beta_alert)  # carol's sentinel
            carols = await next_event(carol, allowed_symbols=BETA | {""}, match=is_alert)
        finally:
            await alice.close()
            await carol.close()
        return event, first, fresh, replies, racing, again, second, beta, carols, event_url

    event, first, fresh, replies, racing, again, second, beta, carols, url = asyncio.run(scenario())
    assert first["notification_id"] == str(event["data"]["notification_id"])
    assert [r.status_code for r in replies] == [200] * 5
    assert sorted(r.json()["status"] for r in replies) == ["duplicate"] * 4 + ["ok"]
    assert stack.query("SELECT COUNT(*) FROM feeds_alert WHERE notification_id = %s",
                       str(fresh["data"]["notification_id"])) == [(1,)]
    assert racing["notification_id"] == str(fresh["data"]["notification_id"])
    assert second["notification_id"] == str(again["data"]["notification_id"])  # no second push of the racing one
    assert carols["notification_id"] == str(beta["data"]["notification_id"])  # alpha's alert never reached carol
    assert "secret" not in json.dumps(stack.query("SELECT payload FROM feeds_webhookdelivery"))
    assert url.startswith(stack.base_url + "/hooks/trendspottr/")


def test_websocket_refuses_anonymous_and_foreign_origin(stack: Stack):
    async def scenario():
        url = stack.base_url.replace("http", "ws") + "/ws/stream/"
        with pytest.raises(InvalidStatus) as anonymous:
            async with connect(url, origin=stack.base_url) as ws:
                await ws.recv()
        client = stack.login("alice")
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        with pytest.raises(InvalidStatus) as foreign:
            async with connect(url, origin="https://evil.example", additional_headers={"Cookie": cookie}) as ws:
                await ws.recv()
        return anonymous.value, foreign.value

    anonymous, foreign = asyncio.run(scenario())
    assert anonymous.response.status_code == 403 and foreign.response.status_code == 403


def test_a_burst_of_browsers_connecting_at_once_is_served(stack: Stack):
    """150 sockets connecting together: more than redis-py's default pool of 100."""

    async def scenario():
        sockets = await asyncio.gather(*(open_stream(stack, "bob") for _ in range(150)))
        await asyncio.gather(*(ws.close() for ws in sockets))
        return len(sockets)

    assert asyncio.run(scenario()) == 150


def _stack_timeouts() -> dict[str, float]:
    """Every timeout an idle browser socket meets on its way through the stack."""
    from daphne.server import Server

    daphne = inspect.signature(Server.__init__).parameters
    redis = settings.REDIS_CONNECTION
    return {
        "redis socket timeout": redis["socket_timeout"],
        "redis health check": redis["health_check_interval"],
        "redis keepalive idle": max(redis["socket_keepalive_options"].values(), default=0),
        "channels-redis blocking read": settings.CHANNEL_LAYER_BLOCKING_READ,
        "daphne ping interval": daphne["ping_interval"].default,
        "daphne ping timeout": daphne["ping_timeout"].default,
    }


def test_an_idle_browser_socket_outlives_every_timeout_then_receives_its_next_event(stack: Stack):
    """A quiet board must stay connected: the socket watches nothing and receives nothing for longer
    than every timeout in the stack, then its team's next alert still arrives on it. (The module
    also fails if Daphne ever logs 'Exception inside application'; see the stack fixture.)"""
    idle = max(_stack_timeouts().values()) + 5
    assert idle >= 30
    [(alpha_alert,)] = stack.query("SELECT a.remote_alert_id FROM dashboard_trendalertdefinition a "
                                   "JOIN dashboard_team t ON t.id = a.team_id WHERE t.name = 'Alpha Desk'")

    async def scenario():
        client = _clients.get("alice") or _clients.setdefault("alice", stack.login("alice"))
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        # Like a browser: no client-side pings; the server's pings are answered automatically.
        async with connect(stack.base_url.replace("http", "ws") + "/ws/stream/", additional_headers={"Cookie": cookie},
                           origin=stack.base_url, ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "watch", "watchlists": []}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "watching"
            with pytest.raises(TimeoutError):  # a close or an error frame would end this wait early
                message = await asyncio.wait_for(ws.recv(), idle)
                pytest.fail(f"the idle socket received {message!r}")
            event = stack.control("deliver", sim="trendspottr", alert_id=alpha_alert)
            alert = await next_event(ws, allowed_symbols=ALPHA | {""},
                                     match=lambda e: e["kind"] == "alert" and e["provider"] == "trendspottr")
        return event, alert

    event, alert = asyncio.run(scenario())
    assert alert["notification_id"] == str(event["data"]["notification_id"])


def test_worker_stops_cleanly_on_sigterm(stack: Stack):
    """Runs last in this module: SIGTERM ends the worker within 5 s and records 'stopped'."""
    worker = stack.processes["worker"]
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: stack.feed_state() == "stopped", timeout=5, what="FeedStatus 'stopped'")
