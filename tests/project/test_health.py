"""/healthz and /readyz as a load balancer sees them: plain HTTP, a backend address as Host, no
session; the database and the live backend's Redis (the "channel_layer" check) real, and made
unreachable with real sockets (a closed port refuses; a listener that accepts and never answers,
or a paused redis-server, hangs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest
from channels.testing import HttpCommunicator
from django.conf import settings as django_settings
from django.core.handlers.asgi import ASGIHandler
from django.db.utils import ConnectionHandler

from project import health
from tests.redisserver import RedisServer

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
PROBE = b"10.0.0.5:8000"  # the Host a balancer sends: the backend's address, not a site name
POSTGRES = django_settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


@pytest.fixture(autouse=True)
def production_transport(settings):
    # As in production behind a TLS proxy: HTTPS redirects on, the probe's Host not allowed.
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["desk.example.com"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def silent_server():
    """A loopback port that accepts connections and never says a word."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def get(path: str, host: bytes = PROBE) -> dict:
    """A plain-HTTP GET through Django's ASGI handler, built now (with this test's settings)."""
    communicator = HttpCommunicator(ASGIHandler(), "GET", path, headers=[(b"host", host)])
    return await communicator.get_response(timeout=10)


async def probe(path: str = "/readyz") -> tuple[int, dict | str, float]:
    started = time.monotonic()
    response = await get(path)
    elapsed = time.monotonic() - started
    body = response["body"].decode()
    return response["status"], json.loads(body) if path == "/readyz" else body, elapsed


async def test_healthz_and_readyz_answer_a_plain_http_probe_without_redirect_or_host_check():
    status, body, _ = await probe("/healthz")
    assert (status, body) == (200, "ok\n")
    status, body, _ = await probe("/readyz")
    assert status == 200 and body["status"] == "ready"
    assert {name: check["status"] for name, check in body["checks"].items()} == {"database": "ok", "channel_layer": "ok"}
    # Everything else still gets the Host check and the SSL redirect.
    assert (await get("/login/"))["status"] == 400
    assert (await get("/login/", host=b"desk.example.com"))["status"] == 301


async def test_readyz_is_503_when_the_channel_layer_refuses(settings):
    port = closed_port()  # where a stopped Redis was
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"  # the live backend follows (feeds.hub.live_backend)
    status, body, elapsed = await probe()
    assert status == 503 and body["status"] == "not_ready" and elapsed < 1.5
    assert body["checks"]["channel_layer"]["status"] == "error" and body["checks"]["database"]["status"] == "ok"
    assert "127.0.0.1" not in json.dumps(body) and str(port) not in json.dumps(body)


async def test_readyz_is_503_within_a_second_when_the_channel_layer_hangs(settings):
    with RedisServer() as redis:
        settings.REDIS_URL = redis.url
        assert (await probe())[0] == 200  # this Redis answers: the probe below fails for the pause alone
        redis.pause()
        status, body, elapsed = await probe()
    assert status == 503 and body["checks"]["channel_layer"]["status"] == "timeout"
    assert 0.9 <= elapsed < 1.6


def unreachable_database(port: int) -> ConnectionHandler:
    if POSTGRES:
        return ConnectionHandler({"default": {**django_settings.DATABASES["default"], "HOST": "127.0.0.1",
                                              "PORT": str(port)}})
    return ConnectionHandler({"default": {**django_settings.DATABASES["default"],
                                          "NAME": f"/nonexistent-{port}/tickerwire.sqlite3"}})


async def _settled() -> None:
    """Wait (with a deadline) until no database check is still running in the probe's thread."""
    async with asyncio.timeout(10):
        while health._db_pending is not None and not health._db_pending.done():
            await asyncio.sleep(0.02)


async def test_readyz_is_503_when_the_database_refuses(monkeypatch):
    port = closed_port()
    monkeypatch.setattr(health, "connections", unreachable_database(port))
    status, body, elapsed = await probe()
    assert status == 503 and elapsed < 1.5
    assert body["checks"]["database"] == {"status": "error", "error": "OperationalError",
                                          "ms": body["checks"]["database"]["ms"]}
    assert body["checks"]["channel_layer"]["status"] == "ok"
    assert str(port) not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)
    await _settled()


@pytest.mark.skipif(not POSTGRES, reason="SQLite is a file: it cannot hang on the network")
async def test_readyz_is_503_within_a_second_when_the_database_hangs(monkeypatch):
    async with silent_server() as port:
        monkeypatch.setattr(health, "connections", unreachable_database(port))
        status, body, elapsed = await probe()
        assert status == 503 and body["checks"]["database"]["status"] == "timeout"
        assert 0.9 <= elapsed < 1.6
        # A second probe while the first check still hangs shares it: no pile of blocked threads.
        pending = health._db_pending
        status, body, _ = await probe()
        assert status == 503 and health._db_pending is pending
    await _settled()  # the listener closed: the hung connect fails and the thread is free again
