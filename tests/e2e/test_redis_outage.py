"""Redis stops for 10 s while news flows, in production shape: Daphne, the StockNews simulator and
its `runfeed` worker as separate processes on a PostgreSQL database and a redis-server of this
module's own (tests/redisserver.py; the shared Redis is never touched).

The worker keeps running and storing, logs the outage once, counts what it could not publish and
shows it in FeedStatus; the browser's socket is closed by the server (4503, try again); once Redis is back
the browser reconnects, finds what it missed in the snapshot, and live delivery resumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
import time
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.e2e.conftest import Stack, free_port, wait_until
from tests.postgres import fresh_database
from tests.redisserver import RedisServer

pytestmark = pytest.mark.stack

OUTAGE = 10.0  # seconds Redis stays down (issue 10)
ALPHA = ["AAPL", "MSFT", "NVDA", "TSLA"]  # alice's team watches these


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    with RedisServer() as redis, fresh_database("twredis", migrated=True) as database_url:
        tmp = tmp_path_factory.mktemp("redis-outage")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "CHANNEL_LAYER_PREFIX": f"twoutage-{uuid.uuid4().hex[:8]}",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "HTTPS": "0",
            "STATIC_MANIFEST": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "FEEDS_WATCH_POLL_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("METRICS_PORT", None)
        stack = Stack(env=env, tmp=tmp, database_url=database_url)
        metrics_port = free_port()
        try:
            stack.manage("seed_demo")
            news = stack.start_simulator("stocknews", "--token", "outage-token", "--news-interval", "0")
            stack.manage("provider", "set", "stocknews", "--endpoint", f"ws://127.0.0.1:{news}/ws",
                         "--token", "outage-token", "--enable")
            stack.web_port = free_port()
            stack.start_daphne()
            stack.start("worker", sys.executable, "manage.py", "runfeed", "stocknews",
                        "--metrics-port", str(metrics_port))
            wait_until(lambda: stack.feed_state("stocknews") == "connected", what="the worker to connect")
            wait_until(lambda: stack.control("stats")["received"] >= 1, what="the worker's subscribe")
            yield stack, redis, metrics_port
        finally:
            stack.stop()


async def open_stream(stack: Stack, client: httpx.Client, *, open_timeout: float = 5):
    watchlists = [w["id"] for w in client.get("/api/board/").json()["watchlists"]]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    ws = await connect(stack.base_url.replace("http", "ws") + "/ws/stream/", additional_headers={"Cookie": cookie},
                       origin=stack.base_url, open_timeout=open_timeout)
    await ws.send(json.dumps({"type": "watch", "watchlists": watchlists}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "watching"
    return ws


async def next_news(ws, external_id: str, *, timeout: float = 10) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "event" and message["event"].get("external_id") == external_id:
                return message["event"]


def emit(stack: Stack, ticker: str, summary: str) -> str:
    return stack.control("emit", ticker=ticker, summary=summary, stockTickers=ticker)["data"]["articleSlug"]


def channel_layer_detail(stack: Stack) -> str:
    rows = stack.query("SELECT s.details->>'channel_layer' FROM feeds_feedstatus s JOIN feeds_provideraccount a "
                       "ON a.id = s.account_id WHERE a.provider = 'stocknews'")
    return (rows[0][0] if rows else None) or ""


def layer_errors(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    found = re.search(r'^tickerwire_events_dropped_total\{provider="stocknews",reason="layer_error"\} (\S+)$', text,
                      re.M)
    return float(found.group(1)) if found else 0.0


def test_a_10s_redis_stop_loses_no_news_for_a_reconnecting_browser(outage):
    stack, redis, metrics_port = outage
    worker = stack.processes["worker"]
    alice = stack.login("alice")

    async def scenario() -> None:
        ws = await open_stream(stack, alice)
        before = emit(stack, "AAPL", "before the outage")
        await next_news(ws, before)
        dropped_before = layer_errors(metrics_port)

        await asyncio.to_thread(redis.stop)
        stopped_at = time.monotonic()
        missed: list[str] = []
        while time.monotonic() - stopped_at < OUTAGE:  # news keeps flowing, about one a second
            missed.append(await asyncio.to_thread(emit, stack, ALPHA[len(missed) % 4], f"outage {len(missed)}"))
            await asyncio.sleep(1)  # the provider's pace, not a synchronisation
        # The consumer's receive failed with Redis: the server closed the socket.
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(next_news(ws, "never", timeout=30), 30)
        assert ws.close_code == 4503, ws.close_code
        # The worker stored everything, kept running, and shows the trouble.
        wait_until(lambda: all(stack.news_stored(x) for x in missed), timeout=10, what="the outage's news stored")
        assert worker.poll() is None, "the worker exited"
        assert channel_layer_detail(stack).startswith("unavailable: ")

        await asyncio.to_thread(redis.start)  # empty, as a Redis without persistence restarts
        returned_at = time.monotonic()
        ws = None
        while ws is None:  # the browser's reconnect loop
            try:
                ws = await open_stream(stack, alice)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                # Refused while Daphne cannot reach Redis; a browser retries, as live.js does.
                assert time.monotonic() - returned_at < 5, "no reconnect within 5 s of Redis returning"
                await asyncio.sleep(1)
        try:
            reconnected_in = time.monotonic() - returned_at
            snapshot = alice.get("/api/board/").json()
            seen = {n["external_id"] for wl in snapshot["watchlists"] for i in wl["instruments"] for n in i["news"]}
            assert set(missed) <= seen, f"missing from the snapshot: {set(missed) - seen}"
            after = emit(stack, "MSFT", "after the outage")
            await next_news(ws, after)
            delivered_in = time.monotonic() - returned_at
        finally:
            await ws.close()
        assert reconnected_in < 5 and delivered_in < 10, (reconnected_in, delivered_in)
        assert layer_errors(metrics_port) - dropped_before >= len(missed)
        wait_until(lambda: channel_layer_detail(stack) == "ok", timeout=5, what="FeedStatus to clear the trouble")

    asyncio.run(scenario())
    assert worker.poll() is None, "the worker exited"
    log = stack.log("worker")
    assert log.count("channel layer unavailable") == 1, log
    assert log.count("channel layer available again") == 1, log
    assert "could not publish" not in log and "Traceback" not in log, log
