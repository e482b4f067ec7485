"""The live path in production shape: Daphne as its own process on PostgreSQL and Redis, events
published through the one door (feeds.broadcast), logged-in sockets on the other side.

- A socket that stops reading beside 100 live ones: the live ones get every event, in order, with
  nothing left out; the stalled one's bounded queue conflates then drops, counted in the server's
  metrics; once it reads again it is told what was skipped, notices the gap by seq, and recovers
  exactly the missing events from the stream's history.
- Events published continuously while a client connects, drops for 2 s and reconnects with its
  position arrive exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from websockets.asyncio.client import connect

from feeds import events as ev
from feeds.broadcast import publish_events
from tests.e2e.conftest import Stack, free_port, wait_until
from tests.postgres import fresh_database

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

QUEUE_FRAMES, QUEUE_BYTES, BUFFER_BYTES = 200, 256 * 1024, 16 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with fresh_database("twlive", migrated=True) as database_url:
        prefix = f"twlive-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "CHANNEL_LAYER_PREFIX": prefix,
            "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1", "METRICS_PORT": str(free_port()),
            # Small bounds, so a modest burst overflows the stalled socket (defaults: project/settings.py).
            "LIVE_SOCKET_QUEUE_FRAMES": str(QUEUE_FRAMES), "LIVE_SOCKET_QUEUE_BYTES": str(QUEUE_BYTES),
            "LIVE_SOCKET_BUFFER_BYTES": str(BUFFER_BYTES), "LIVE_SOCKET_KERNEL_BUFFER_BYTES": str(BUFFER_BYTES),
            "LIVE_HISTORY_SIZE": "5000",
        }
        stack = Stack(env=env, tmp=tmp_path_factory.mktemp("live"), database_url=database_url)
        try:
            stack.manage("seed_demo")
            stack.web_port = free_port()
            stack.start_daphne()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def publish(server, settings):
    """publish_events on the server's Redis prefix, as a feed worker of that deployment does."""
    settings.LIVE_PREFIX = server.env["CHANNEL_LAYER_PREFIX"]
    return publish_events


def session(server: Stack, username: str = "alice") -> tuple[str, list[int]]:
    client = server.login(username)
    watchlists = [w["id"] for w in client.get("/api/board/").json()["watchlists"]]
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items()), watchlists


def news(instrument_id: int, n: int, *, summary: str = "") -> ev.News:
    now = datetime.now(timezone.utc)
    return ev.News(provider="stocknews", code="AAPL", received_at=now, instrument_id=instrument_id, symbol="AAPL",
                   external_id=f"live-{n}", headline=f"headline {n}", summary=summary, published_at=now)


def quote(instrument_id: int, n: int) -> ev.Quote:
    now = datetime.now(timezone.utc)
    return ev.Quote(provider="insightsentry", code="NASDAQ:AAPL", received_at=now, instrument_id=instrument_id,
                    symbol="AAPL", ts=now, price=100 + n / 100)


async def open_socket(server: Stack, cookie: str, *, sock=None, **options):
    return await connect(server.base_url.replace("http", "ws") + "/ws/stream/", additional_headers={"Cookie": cookie},
                         origin=server.base_url, sock=sock, **options)


async def watch(ws, watchlists, since=None) -> dict:
    await ws.send(json.dumps({"type": "watch", "watchlists": watchlists, **({"since": since} if since else {})}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "watching":
            return frame


class Applied:
    """What a browser does with a stream's frames (static/dashboard/js/live.js): apply seq n+1,
    treat skipped seqs as applied, drop duplicates, stop at a gap."""

    def __init__(self, stream: str, position: dict) -> None:
        self.stream, self.epoch, self.seq = stream, position["epoch"], position["seq"]
        self.events: list[dict] = []
        self.skipped: set[int] = set()
        self.duplicates = 0

    def take(self, frame: dict) -> bool:
        """False at a gap."""
        if frame.get("stream") != self.stream:
            return True
        if frame["type"] == "gap":
            return frame["seq"] <= self.seq
        if frame["type"] == "skip":
            self.skipped.update(frame["seqs"])
            return True
        if frame["type"] != "event":
            return True
        assert frame["epoch"] == self.epoch
        while self.seq + 1 in self.skipped:
            self.skipped.discard(self.seq + 1)
            self.seq += 1
        if frame["seq"] <= self.seq:
            self.duplicates += 1
            return True
        if frame["seq"] != self.seq + 1:
            return False
        self.seq = frame["seq"]
        self.events.append(frame["event"])
        return True


def metric(server: Stack, name: str, **labels) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.env['METRICS_PORT']}/metrics", timeout=5).text
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    match = re.search(rf"^{re.escape(wanted)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def instrument_id(server: Stack, symbol: str) -> int:
    return server.query("SELECT id FROM feeds_instrument WHERE symbol = %s", symbol)[0][0]


def test_a_stalled_socket_beside_100_live_ones_costs_only_itself_and_recovers_exactly(server, publish):
    """100 sockets watch AAPL; a stalled one watches alice's whole watchlist, so it also gets a
    flood of MSFT news and quotes, several times its bounds. Writing never waits on a socket, so the
    live sockets get every AAPL event while the stalled one reads nothing at all."""
    aapl_id, msft_id = instrument_id(server, "AAPL"), instrument_id(server, "MSFT")
    aapl_stream, msft_stream = f"instrument.{aapl_id}", f"instrument.{msft_id}"
    cookie, watchlists = session(server)
    summary = "Analysts weigh the quarter. " * 70  # ~2 KB a frame
    total = 300

    async def scenario():
        live = [await open_socket(server, cookie) for _ in range(100)]
        for ws in live:
            await ws.send(json.dumps({"type": "watch", "watchlists": [], "instruments": [aapl_id]}))
        # The stalled browser: a tiny receive buffer, and a client that stops reading after the answer.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", server.web_port))
        stalled = await open_socket(server, cookie, sock=raw, max_queue=1, ping_interval=None)
        stalled_start = await watch(stalled, watchlists)
        conflated, dropped = metric(server, "tickerwire_socket_frames_conflated_total"), \
            metric(server, "tickerwire_socket_send_drops_total", reason="overflow")

        async def drain(ws) -> Applied:
            applied = None
            async with asyncio.timeout(60):
                while applied is None or len(applied.events) < total:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "watching":
                        applied = Applied(aapl_stream, frame["streams"][aapl_stream])
                    elif applied is not None:
                        assert frame.get("stream") == aapl_stream, f"not watched: {frame}"
                        assert applied.take(frame), "a live socket saw a gap"
            return applied

        readers = [asyncio.create_task(drain(ws)) for ws in live]
        for n in range(1, total + 1):
            await publish([news(aapl_id, n), news(msft_id, n, summary=summary), quote(msft_id, n)])
        everyone = await asyncio.gather(*readers)
        # Every live socket got every AAPL event, in order, none skipped, none twice.
        for applied in everyone:
            assert [e["headline"] for e in applied.events] == [f"headline {n}" for n in range(1, total + 1)]
            assert applied.skipped == set() and applied.duplicates == 0
        # The stalled socket's queue conflated then dropped, counted.
        assert metric(server, "tickerwire_socket_frames_conflated_total") > conflated
        assert metric(server, "tickerwire_socket_send_drops_total", reason="overflow") > dropped

        # It reads again: skips are announced, a gap sends it back with its positions, and the
        # history fills exactly what was lost.
        streams = {s: Applied(s, stalled_start["streams"][s]) for s in (aapl_stream, msft_stream)}
        gaps, recovering = 0, False
        async with asyncio.timeout(60):
            while streams[aapl_stream].seq < total or streams[msft_stream].seq < 2 * total:
                frame = json.loads(await stalled.recv())
                if frame["type"] == "watching":
                    assert all(frame["streams"][s]["recovered"] for s in streams)
                    recovering = False
                applied = streams.get(frame.get("stream"))
                if applied is None or applied.take(frame) or recovering:
                    continue
                gaps += 1
                recovering = True  # one request per gap; frames until its answer are dropped
                since = {s: {"epoch": a.epoch, "seq": a.seq} for s, a in streams.items()}
                await stalled.send(json.dumps({"type": "watch", "watchlists": watchlists, "since": since}))
        assert gaps >= 1
        news_ids = [e["external_id"] for e in streams[msft_stream].events if e["kind"] == "news"]
        assert news_ids == [f"live-{n}" for n in range(1, total + 1)]  # every news item, once, in order
        quotes = [e for e in streams[msft_stream].events if e["kind"] == "quote"]
        assert len(quotes) < total and quotes[-1]["price"] == pytest.approx(100 + total / 100)  # newest kept
        assert [e["headline"] for e in streams[aapl_stream].events] == [f"headline {n}" for n in range(1, total + 1)]
        for ws in [*live, stalled]:
            await ws.close()

    asyncio.run(scenario())


def test_events_published_while_a_client_connects_drops_2s_and_reconnects_arrive_exactly_once_in_order(
        server, publish):
    instrument = instrument_id(server, "AAPL")
    stream = f"instrument.{instrument}"
    cookie, watchlists = session(server)
    published: list[int] = []

    async def publisher(stop: asyncio.Event):
        n = 0
        while not stop.is_set():
            n += 1
            await publish([news(instrument, 10_000 + n)])
            published.append(n)
            await asyncio.sleep(0.02)  # pacing the publisher (~50/s), not synchronising the test

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(publisher(stop))
        async with asyncio.timeout(10):
            while len(published) < 20:
                await asyncio.sleep(0.01)
        ws = await open_socket(server, cookie)
        start = await watch(ws, watchlists)
        applied = Applied(stream, start["streams"][stream])
        first = applied.seq
        async with asyncio.timeout(10):
            while len(applied.events) < 30:
                assert applied.take(json.loads(await ws.recv()))
        await ws.close()  # the link drops
        await asyncio.sleep(2)  # a 2 s outage is the scenario itself
        ws = await open_socket(server, cookie)
        answer = await watch(ws, watchlists, since={stream: {"epoch": applied.epoch, "seq": applied.seq}})
        assert answer["streams"][stream]["recovered"] is True
        async with asyncio.timeout(10):
            while len(applied.events) < 200:
                assert applied.take(json.loads(await ws.recv()))
        stop.set()
        await task
        await ws.close()
        return first, applied

    first, applied = asyncio.run(scenario())
    ids = [int(e["external_id"].split("-")[1]) - 10_000 for e in applied.events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # exactly once, in publish order, across the drop
    assert applied.seq == first + len(ids) and applied.duplicates == 0
