"""The Knowsis feed (pysher, wrapped) against the Pusher simulator: events, private-channel auth,
and every hardening point of issue 4, each its own test."""

from __future__ import annotations

import asyncio
import random

import pytest

from feeds.backoff import Backoff
from feeds.events import Alert, AlertRevoked, Quote, Sentiment
from feeds.providers.knowsis.feed import KnowsisFeed
from feeds.simulators.knowsis import KnowsisSimulator
from feeds.status import MemoryStatus
from tests.feedrunner import CollectingPipeline, running
from feeds.transports.pusher import PusherOptions

pytestmark = pytest.mark.asyncio
KEY, SECRET = "knowsis-key", "knowsis-secret-0123"
FAST = PusherOptions(handshake_timeout=1.5, ws_ping_interval=0.5, ws_ping_timeout=0.4, activity_ping=0.5,
                     stale_after=2.0, watchdog_tick=0.1)


def make_feed(sim, *, key=KEY, sleep=None, seed=11, **kwargs):
    status, pipeline = MemoryStatus(), CollectingPipeline()
    feed = KnowsisFeed(endpoint=f"ws://127.0.0.1:{sim.port}", key=key, secret=SECRET, pipeline=pipeline, status=status,
                       options=FAST, backoff=kwargs.pop("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(seed))),
                       sleep=sleep, **kwargs)
    return feed, status, pipeline



def subscribe_auths(sim, channel):
    return [m["data"].get("auth") for _, m in sim.received
            if isinstance(m, dict) and m.get("event") == "pusher:subscribe" and m["data"].get("channel") == channel]


async def test_public_and_private_channels_deliver_knowsis_events():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"apple-inc", "private-tesla-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1 and sim.subscribed("private-tesla-inc") == 1)
            sim.emit("private-tesla-inc", "datapoint", {"sentiment": 2, "volume": 2.1})
            sim.emit("apple-inc", "anomaly_alert_triggered",
                     {"alert_id": "57602570f3d4f757039a14ef", "trigger_time": "2016-06-02T14:57:56", "credibility": "high"})
            sim.emit("apple-inc", "anomaly_alert_removed", {"alert_id": "57602570f3d4f757039a14ef"})
            sim.emit("apple-inc", "price")
            sim.emit("apple-inc", "tweets", {"ids": [1]})
            await sim.wait_for(lambda: len(pipeline.events) == 4 and feed.ignored == 1)
        kinds = [type(e) for e in pipeline.events]
        assert kinds == [Sentiment, Alert, AlertRevoked, Quote]
        assert pipeline.events[0].code == "private-tesla-inc" and pipeline.events[1].level == "high"
        assert pipeline.events[3].delay_seconds > 0
        assert status.state == "stopped" and status.details["ignored_events"] == 1


@pytest.mark.parametrize("code,state", [(4001, "auth_failed"), (4009, "auth_failed"), (4003, "refused")])
async def test_close_codes_4000_to_4099_stop_for_good(code, state):
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, _ = make_feed(sim)
        task = asyncio.create_task(feed.run())
        await sim.wait_for(lambda: sim.open_connections == 1)
        await sim.close_all(code, "go away")
        await asyncio.wait_for(task, 10)  # returns by itself: no retry loop
        assert sim.connection_attempts == 1
        assert status.state == state and f"closed {code}" in status.last_error


async def test_an_unknown_app_key_is_refused_once_and_reported():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, _ = make_feed(sim, key="not-our-key")
        await asyncio.wait_for(feed.run(), 10)
        assert sim.connection_attempts == 1 and status.state == "auth_failed"
        assert status.states.count("auth_failed") == 1


async def test_4100_backs_off_at_least_a_second_and_4200_reconnects_at_once_only_once():
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, _ = make_feed(sim, sleep=record, backoff=Backoff(base=1, cap=60, rng=random.Random(5)))
        async with running(feed):
            for n, code in enumerate([4200, 4200, 4100], start=1):
                await sim.wait_for(lambda: sim.open_connections == 1 and len(delays) == n - 1)
                await sim.close_all(code)
                await sim.wait_for(lambda: len(delays) == n)
    policy = Backoff(base=1, cap=60, rng=random.Random(5))
    policy.attempt = 1
    assert delays[0] == 0  # 4200: reconnect now
    assert delays[1] == policy.next_delay()  # a second 4200 in a row goes through the policy
    assert delays[2] >= 1.0  # 4100: back off at least a second


async def test_pusher_error_4200_during_an_outage_stays_within_the_backoff_policy():
    """pysher alone would be stuck at a 0 s reconnect interval and hammer the server."""
    delays: list[float] = []
    feed = None

    async def record(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 6:
            feed.stop()

    sim = KnowsisSimulator(KEY, SECRET, news_interval=None)
    await sim.start()
    feed, status, _ = make_feed(sim, sleep=record, backoff=Backoff(base=1, cap=60, rng=random.Random(9)))
    task = asyncio.create_task(feed.run())
    await sim.wait_for(lambda: sim.open_connections == 1)
    sim.send_error_event(4200, "generic reconnect")
    await sim.stop()  # the outage: every later attempt is refused
    await asyncio.wait_for(task, 20)
    policy = Backoff(base=1, cap=60, rng=random.Random(9))
    policy.attempt = 1
    assert delays[0] == 0 and delays[1:] == [policy.next_delay() for _ in range(5)]


async def test_a_frozen_server_is_detected_and_the_link_rebuilt():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"apple-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1)
            sim.freeze()
            await sim.wait_for(lambda: feed.supervisor.sessions >= 2, timeout=15)  # rebuilt (well within 30 s)
            sim.thaw()
            await sim.wait_for(lambda: sim.subscribed("apple-inc") >= 1 and status.state == "connected", timeout=15)
            sim.emit("apple-inc", "datapoint", {"sentiment": 1, "volume": 1.0})
            await sim.wait_for(lambda: len(pipeline.events) >= 1, timeout=10)
        assert status.reconnects >= 1


async def test_a_bad_frame_never_raises_into_pysher_and_liveness_survives_it():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"apple-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1)
            for client in list(sim._clients.values()):
                await client.ws.send("this is not JSON")
                await client.ws.send("[1, 2, 3]")  # JSON, not an object: pysher would raise on it
                # A text frame that is not UTF-8: websocket-client's own check is off (a per-byte
                # Python loop); our strict decode must catch it, count it and keep the link.
                await client.ws.send(b'{"event": "datapoint", "data": "\xff\xfe"}', text=True)
            sim.emit("apple-inc", "datapoint", {"sentiment": 1, "volume": 1.0})
            await sim.wait_for(lambda: len(pipeline.events) == 1 and status.parse_errors == 3)
            assert feed.supervisor.sessions == 1  # the link stayed up
            sim.freeze()  # and its liveness checks still work afterwards
            await sim.wait_for(lambda: feed.supervisor.sessions >= 2, timeout=15)
            sim.thaw()


async def test_a_handshake_that_never_completes_is_given_up():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        sim.blackhole = True
        feed, status, _ = make_feed(sim)
        async with running(feed):
            await sim.wait_for(lambda: sim.connection_attempts >= 2, timeout=10)  # gave up, tried again
            assert "no connection_established" in status.last_error or "timed out" in status.last_error.lower()
            sim.blackhole = False
            await sim.wait_for(lambda: status.state == "connected", timeout=10)


async def test_private_channels_are_resubscribed_with_a_fresh_signature_after_a_reconnect():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"private-tesla-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("private-tesla-inc") == 1)
            await sim.close_all(4200)
            await sim.wait_for(lambda: len(subscribe_auths(sim, "private-tesla-inc")) == 2
                               and sim.subscribed("private-tesla-inc") == 1)
            sim.emit("private-tesla-inc", "datapoint", {"sentiment": 3, "volume": 1.5})
            await sim.wait_for(lambda: len(pipeline.events) == 1)
        first, second = subscribe_auths(sim, "private-tesla-inc")
        assert first and second and first != second  # signed for each connection's socket_id
        assert not status.last_error.startswith("pusher:error")


async def test_watchlist_changes_subscribe_and_unsubscribe_channels():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, *_ = make_feed(sim)
        feed.set_watched({"apple-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1)
            feed.set_watched({"exxon-mobil"})
            await sim.wait_for(lambda: sim.subscribed("exxon-mobil") == 1 and sim.subscribed("apple-inc") == 0)


async def test_knowsis_connects_with_pusher_protocol_7():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, _ = make_feed(sim)
        async with running(feed):
            await sim.wait_for(lambda: status.state == "connected")
        assert sim.protocols == ["7"]  # pysher 1.0.8 alone asks for 6


async def test_a_datapoint_without_sentiment_or_volume_is_a_counted_parse_error_not_a_sample():
    async with KnowsisSimulator(KEY, SECRET, news_interval=None) as sim:
        feed, status, pipeline = make_feed(sim)
        feed.set_watched({"apple-inc"})
        async with running(feed):
            await sim.wait_for(lambda: sim.subscribed("apple-inc") == 1)
            sim.emit("apple-inc", "datapoint", {})
            sim.emit("apple-inc", "datapoint", {"sentiment": 1, "volume": 2})  # the sentinel: processed after
            await sim.wait_for(lambda: len(pipeline.events) == 1)
        assert status.parse_errors == 1 and pipeline.events[0].score == 1.0
