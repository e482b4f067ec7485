"""The StockTwits firehose feed (SSE over gzip) through the fault proxy, against its simulator
over real loopback sockets. The read timeout is scaled down through the transport's own
`read_timeout` (allowed below 45 s only with an explicit `transport=`); the production default is
pinned separately."""

from __future__ import annotations

import dataclasses
import json
import random

import httpx
import pytest

from feeds.backoff import Backoff
from feeds.providers.stocktwits.feed import StockTwitsFeed
from feeds.simulators.stocktwits import StockTwitsSimulator
from feeds.status import MemoryStatus
from tests.faultproxy import fault_proxy  # noqa: F401 (fixture)
from tests.feedrunner import CollectingPipeline, running

from .common import UTF8_TEXT, normalised, recording_sleep, until

# The feed reads its resume cursor from the database (empty here: it starts live).
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
CREDS = ("firehose-user", "firehose-pass-123")
READ_TIMEOUT = 0.5  # production: 60 s (the provider's keep-alives come every 15 s)


class Pipeline(CollectingPipeline):
    async def wait_idle(self) -> None:  # nothing is pending: submit() keeps events at once
        return None


def stocktwits(url: str, *, seed: int = 1, **kwargs):
    status, pipeline = MemoryStatus(), Pipeline()
    feed = StockTwitsFeed(endpoint=url, username=CREDS[0], password=CREDS[1], pipeline=pipeline, status=status,
                          backoff=Backoff(base=0.01, cap=0.05, rng=random.Random(seed)), **kwargs)
    return feed, status, pipeline


def emit_utf8(sim: StockTwitsSimulator, title: str) -> dict:
    """Emit a message whose symbol title is sent as raw UTF-8 (the simulator escapes non-ASCII)."""
    sim.silent = True  # hold it back while its text is swapped
    message = sim.emit(["AAPL"])
    message["symbols"][0]["title"] = title
    item = dataclasses.replace(sim.buffer[-1], text=json.dumps(message, ensure_ascii=False, separators=(",", ":")))
    sim.buffer[-1] = item
    for stream in sim._streams:
        stream.pending[-1] = item
    sim.silent = False
    return message


async def test_stocktwits_events_through_a_1_byte_slicing_proxy_equal_the_direct_ones(fault_proxy):
    async with StockTwitsSimulator([":".join(CREDS)], interval=None, seed=5) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.slicing = True
        direct, _, direct_out = stocktwits(sim.url())
        sliced, sliced_status, sliced_out = stocktwits(f"http://127.0.0.1:{proxy.port}/sentiment")
        async with running(direct), running(sliced):
            await sim.wait_for(lambda: sim.open_streams == 2, timeout=10)
            for _ in range(4):
                sim.emit()  # one to three symbols each
            emit_utf8(sim, UTF8_TEXT)
            await until(lambda: any(e.title == UTF8_TEXT for e in direct_out.events)
                        and any(e.title == UTF8_TEXT for e in sliced_out.events)
                        and len(sliced_out.events) == len(direct_out.events), 20, "posts on both")
        assert normalised(sliced_out.events) == normalised(direct_out.events)
        assert len({e.external_id for e in sliced_out.events}) == 5
        assert proxy.writes_down == proxy.bytes_down > 500  # gzip cut into single bytes
        assert sliced_status.parse_errors == 0 and sliced.transport.connections == 1


async def test_stocktwits_detects_a_black_hole_within_its_read_timeout_and_resumes(fault_proxy):
    async with StockTwitsSimulator([":".join(CREDS)], interval=None, keepalive_interval=0.1) as sim:
        proxy = await fault_proxy(sim.port)
        feed, status, pipeline = stocktwits(f"http://127.0.0.1:{proxy.port}/sentiment", read_timeout=READ_TIMEOUT,
                                            transport=httpx.AsyncHTTPTransport())
        async with running(feed):
            await sim.wait_for(lambda: sim.open_streams == 1 and status.state == "connected", timeout=10)
            # Healthy: keep-alives every 0.1 s hold the 0.5 s read timeout off.
            await sim.wait_for(lambda: proxy.bytes_down > 300, timeout=5)
            assert feed.transport.connections == 1
            proxy.blackhole = True
            took = await until(lambda: status.state != "connected", 5, "black hole detected")
            assert took < READ_TIMEOUT + 0.7
            assert "ReadTimeout" in status.last_error
            await proxy.wait_for(lambda: proxy.accepted >= 3, timeout=10)  # it keeps trying by itself
            proxy.blackhole = False
            await until(lambda: status.state == "connected" and sim.open_streams >= 1, 10, "stream rebuilt")
            sim.emit(["AAPL"])
            await until(lambda: len(pipeline.events) >= 1, 10, "a post on the rebuilt stream")
        assert status.reconnects >= 2


async def test_production_read_timeout_detects_a_black_hole_after_the_providers_keepalives():
    feed, *_ = stocktwits("http://127.0.0.1:9/sentiment")  # never run: only its defaults are read
    timeout = feed.transport._timeout
    assert 30 < timeout.read <= 75  # "read timeout > 30 s" (provider doc), 2-3x the 15 s keep-alive
    assert timeout.connect is not None and timeout.connect <= 10
    with pytest.raises(ValueError):  # a short read timeout in production would cut healthy streams
        stocktwits("http://127.0.0.1:9/sentiment", read_timeout=READ_TIMEOUT)


async def test_accept_then_close_stays_within_the_backoff_policy(fault_proxy):
    """A server that answers 200 and then drops every stream at once: the reconnects follow
    feeds/backoff.py (scaled 30x down), never reset by a successful response, each wait really waited."""
    scale = 30
    delays: list[float] = []

    sleep = recording_sleep(delays)
    def policy() -> Backoff:
        return Backoff(base=1.0 / scale, cap=60.0 / scale, healthy_after=60.0 / scale, rng=random.Random(8))

    async with StockTwitsSimulator([":".join(CREDS)], interval=None, seed=5) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.accept_then_close = True
        status = MemoryStatus()
        feed = StockTwitsFeed(endpoint=f"http://127.0.0.1:{proxy.port}/sentiment", username=CREDS[0],
                              password=CREDS[1], pipeline=Pipeline(), status=status, backoff=policy(), sleep=sleep)
        async with running(feed):
            await proxy.wait_for(lambda: proxy.accepted >= 7, timeout=60.0 / scale + 3)
        assert len(sim.sent) >= 6  # the streams were accepted by the provider: the proxy cut them after its answer
    expected = policy()
    assert len(delays) >= 6 and delays == [expected.next_delay() for _ in delays]
    gaps = [b - a for a, b in zip(proxy.accepted_at, proxy.accepted_at[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, delays))
    assert status.state != "auth_failed" and status.reconnects >= 6
