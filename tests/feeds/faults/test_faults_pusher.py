"""The Knowsis feed (pysher, wrapped by feeds.transports.pusher) through the fault proxy, against
the Pusher simulator over real loopback sockets. Timings are scaled down through `PusherOptions`;
the production defaults are pinned separately."""

from __future__ import annotations

import json
import random

import pytest
from websockets.asyncio.server import broadcast

from feeds.backoff import Backoff
from feeds.events import Alert
from feeds.providers.knowsis.feed import KnowsisFeed
from feeds.simulators.knowsis import KnowsisSimulator
from feeds.status import MemoryStatus
from feeds.transports.pusher import PusherOptions
from tests.faultproxy import fault_proxy  # noqa: F401 (fixture)
from tests.feedrunner import CollectingPipeline, running

from .common import UTF8_TEXT, normalised, recording_sleep, until

pytestmark = pytest.mark.asyncio
KEY, SECRET = "knowsis-fault-key", "knowsis-fault-secret-0123"
# Liveness scaled ~15x down (production: WebSocket ping 10 s + 5 s, watchdog 25 s).
SCALED = PusherOptions(handshake_timeout=1.0, ws_ping_interval=0.5, ws_ping_timeout=0.4, activity_ping=0.5,
                       stale_after=1.5, watchdog_tick=0.1)


def knowsis(port: int, *, seed: int = 1, **kwargs):
    status, pipeline = MemoryStatus(), CollectingPipeline()
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(seed)))
    kwargs.setdefault("options", SCALED)
    feed = KnowsisFeed(endpoint=f"ws://127.0.0.1:{port}", key=KEY, secret=SECRET, pipeline=pipeline, status=status,
                       **kwargs)
    feed.set_watched({"apple-inc", "private-tesla-inc"})
    return feed, status, pipeline


async def test_knowsis_events_through_a_1_byte_slicing_proxy_equal_the_direct_ones(fault_proxy):
    async with KnowsisSimulator(KEY, SECRET, news_interval=None, seed=3) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.slicing = True
        direct, _, direct_out = knowsis(sim.port)
        sliced, sliced_status, sliced_out = knowsis(proxy.port)
        async with running(direct), running(sliced):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 2 and sim.subscribed("private-tesla-inc") == 2,
                               timeout=15)
            sim.emit("private-tesla-inc", "datapoint", {"sentiment": 2, "volume": 2.1})
            sim.emit("apple-inc", "anomaly_alert_triggered")
            sim.emit("apple-inc", "price")
            # Raw UTF-8 (no websocket compression with pysher): the slices cut inside characters.
            data = json.dumps({"alert_id": UTF8_TEXT, "trigger_time": "2016-06-02T14:57:56", "credibility": "high"},
                              ensure_ascii=False)
            broadcast(sim._all_ws(), json.dumps({"event": "anomaly_alert_triggered", "channel": "apple-inc",
                                                 "data": data}, ensure_ascii=False))
            await until(lambda: len(direct_out.events) == 4 and len(sliced_out.events) == 4, 20, "events on both")
        assert normalised(sliced_out.events) == normalised(direct_out.events)
        assert isinstance(sliced_out.events[-1], Alert) and sliced_out.events[-1].external_id == UTF8_TEXT
        assert proxy.writes_down == proxy.bytes_down > 500
        assert sliced_status.parse_errors == 0 and sliced.supervisor.sessions == 1


async def test_knowsis_detects_a_black_hole_and_rebuilds_the_link(fault_proxy):
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        proxy = await fault_proxy(sim.port)
        feed, status, pipeline = knowsis(proxy.port)
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1 and status.state == "connected", timeout=10)
            proxy.blackhole = True
            took = await until(lambda: status.state != "connected", 10, "black hole detected")
            # The WebSocket ping (0.5 s + 0.4 s) or the watchdog (1.5 s) gives the link up.
            assert took < SCALED.stale_after + 1.0
            await proxy.wait_for(lambda: proxy.accepted >= 3, timeout=10)  # it keeps trying by itself
            assert status.state != "connected"
            proxy.blackhole = False
            await sim.wait_for(lambda: status.state == "connected" and sim.subscribed("apple-inc") >= 1, timeout=10)
            sim.emit("apple-inc", "datapoint", {"sentiment": 1, "volume": 1.0})
            await until(lambda: len(pipeline.events) >= 1, 10, "an event on the rebuilt link")
        assert status.reconnects >= 2 and feed.supervisor.sessions >= 3


async def test_production_liveness_detects_a_black_hole_within_30_s():
    options = PusherOptions()
    assert options.ws_ping_interval + options.ws_ping_timeout <= 30  # websocket-client's ping
    assert options.stale_after + options.watchdog_tick <= 30  # and our watchdog, whichever first
    assert options.handshake_timeout <= 30  # a handshake into the hole is given up too


async def test_every_close_4100_to_4199_waits_at_least_a_second_not_only_the_first():
    """Pusher protocol 7: 4100-4199 "back off >= 1 s". Before the fix only the first close after a
    healthy period was held off; the later ones took the bare full-jitter delay (here 0.66 s)."""
    delays: list[float] = []

    async def record(delay: float) -> None:  # the policy's delays, without waiting them out
        delays.append(delay)

    codes = [4100, 4100, 4150, 4199, 4100, 4100]
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, _ = knowsis(sim.port, sleep=record, backoff=Backoff(base=1, cap=60, rng=random.Random(4)))
        async with running(feed):
            for n, code in enumerate(codes, start=1):
                await sim.wait_for(lambda: sim.open_connections == 1 and len(delays) == n - 1, timeout=10)
                await sim.close_all(code, "over capacity")
                await sim.wait_for(lambda: len(delays) == n, timeout=10)
    assert len(delays) == len(codes) and min(delays) >= 1.0
    # Otherwise the policy itself: the same draws, the attempt counter never reset by a handshake.
    policy = Backoff(base=1, cap=60, rng=random.Random(4))
    assert delays == [max(1.0, policy.next_delay()) for _ in codes]
    assert sim.connection_attempts == len(codes) + 1


async def test_accept_then_close_at_the_tcp_level_stays_within_the_backoff_policy(fault_proxy):
    """The server's handshake answer passes, then the link drops without a close frame: pysher's own
    fixed 10 s reconnect is not used; each attempt follows feeds/backoff.py (scaled down), never reset
    by a handshake, each wait really waited."""
    delays: list[float] = []

    sleep = recording_sleep(delays)
    def policy() -> Backoff:
        return Backoff(base=0.05, cap=2.0, healthy_after=2.0, rng=random.Random(8))

    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        proxy = await fault_proxy(sim.port)
        proxy.accept_then_close = True
        feed, status, _ = knowsis(proxy.port, sleep=sleep, backoff=policy())
        async with running(feed):
            await proxy.wait_for(lambda: proxy.accepted >= 6, timeout=20)
    expected = policy()
    draws = [expected.next_delay() for _ in delays]
    # An unclean drop after a healthy link waits >= 1 s the first time (pusher.classify), then the policy.
    assert len(delays) >= 5 and delays == [max(1.0, draws[0]), *draws[1:]]
    gaps = [b - a for a, b in zip(proxy.accepted_at, proxy.accepted_at[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, delays))
    assert sim.connection_attempts >= 5 and status.state not in ("auth_failed", "refused")
