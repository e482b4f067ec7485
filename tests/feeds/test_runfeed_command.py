"""`manage.py runfeed` as its own process: metrics on `--metrics-port`, JSON log lines that name
the worker, a clean stop on SIGTERM. It shares the test database, so it needs PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from feeds.models import FeedStatus, ProviderAccount
from feeds.simulators.stocknews import StockNewsSimulator
from tests import postgres
from tests.factories import team_with_watchlist, user

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "runfeed-token-0001"
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                       reason="the worker process must open the test database"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sample(port: int, name: str, **labels: str) -> float | None:
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)).text
    except httpx.TransportError:
        return None  # not listening yet
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


async def until(predicate, *, timeout: float = 30, what: str):
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _setup(endpoint: str) -> None:
    ProviderAccount.objects.create(provider="stocknews", endpoint=endpoint, token=TOKEN)
    team_with_watchlist("Alpha", {user("alice"): "owner"}, ["AAPL"])


async def test_a_worker_serves_its_metrics_logs_json_and_stops_cleanly():
    port = free_port()
    async with StockNewsSimulator([TOKEN], news_interval=None) as sim:
        await sync_to_async(_setup)(f"ws://127.0.0.1:{sim.port}/ws")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "LOG_FORMAT": "json",
               "DATABASE_URL": postgres.database_url(settings.DATABASES["default"]["NAME"]),
               "FEEDS_WATCH_POLL_SECONDS": "0.2"}
        env.pop("METRICS_PORT", None)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "manage.py", "runfeed", "stocknews", "--metrics-port", str(port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async def connected() -> bool:
                assert worker.returncode is None, "the worker exited"
                return await sample(port, "tickerwire_feed_state", provider="stocknews",
                                    tickerwire_feed_state="connected") == 1

            await until(connected, what="the worker's metrics to show it connected")
            assert await sample(port, "tickerwire_feed_lease_held", provider="stocknews") == 1  # the only worker holds
            await sim.wait_for(lambda: any(m.get("type") == "subscribe" for _, m in sim.received if isinstance(m, dict)),
                               timeout=10)
            sim.emit_news("AAPL", stockTickers=["AAPL"])

            async def stored() -> bool:
                return await sample(port, "tickerwire_events_stored_total", provider="stocknews") == 2

            await until(stored, what="the news and its quote to be counted as stored")
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(worker.communicate(), 15)
    assert worker.returncode == 0, stderr.decode()
    records = [json.loads(line) for line in stderr.decode().splitlines()]
    assert any(r["message"].startswith("stocknews: feed consuming from") for r in records)
    assert {r.get("role") for r in records} == {"runfeed:stocknews"}
    assert TOKEN not in stderr.decode()
    assert (await sync_to_async(FeedStatus.objects.get)()).state == "stopped"
