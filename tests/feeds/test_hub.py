"""The process' fan-out (feeds/hub.py) on the real Redis: a join returns once every later event
arrives; one subscription serves every local socket; leaving unsubscribes; control messages reach
the consumer; a lost subscription closes every socket so its browser resyncs."""

from __future__ import annotations

import asyncio
import json

import pytest

from feeds.broadcast import publish_revoke
from feeds.hub import Hub, HubUnavailable
from feeds.livestore import Outgoing, RedisLive
from feeds.sinks import Frame
from tests.feeds.test_livestore import redis_live
from tests.redisserver import RedisServer

pytestmark = pytest.mark.asyncio


class Capture:
    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.arrived = asyncio.Event()

    def ready(self) -> bool:
        return True

    def write(self, frame: Frame) -> None:
        self.frames.append(json.loads(frame.text))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.frames


async def test_an_event_published_right_after_join_returns_reaches_every_local_socket_once():
    hub = Hub(redis_live())
    a, b = Capture(), Capture()
    sink_a, sink_b = hub.sink(a), hub.sink(b)
    await hub.join(sink_a, ["instrument.1"])
    await hub.join(sink_b, ["instrument.1", "instrument.2"])
    await hub.live.publish([Outgoing("instrument.1", '{"n":1}'), Outgoing("instrument.2", '{"n":2}')])
    assert [f["event"] for f in await b.wait_for(2)] == [{"n": 1}, {"n": 2}]
    assert [f["event"] for f in await a.wait_for(1)] == [{"n": 1}]
    assert hub._subscribed == {"instrument.1", "instrument.2"}
    hub.drop(sink_a)
    hub.drop(sink_b)
    async with asyncio.timeout(5):
        while hub._subscribed:
            await asyncio.sleep(0.01)
    await hub.live.publish([Outgoing("instrument.1", '{"n":3}')])
    assert len(a.frames) == 1 and len(b.frames) == 2


async def test_a_revoke_reaches_the_users_sockets_as_a_control_message(settings):
    from feeds.hub import get_hub

    hub = await get_hub()
    got = []
    sink = hub.sink(Capture(), on_control=got.append)
    await hub.join(sink, ["user.42"])
    await publish_revoke(user_id=42, reason="role changed")
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.01)
    assert got == [{"type": "access.revoke", "reason": "role changed", "ended_session": ""}]
    hub.drop(sink)


async def test_a_lost_subscription_closes_every_socket_and_joins_fail_until_redis_is_back():
    with RedisServer() as server:
        live = RedisLive(url=server.url, prefix="twhub", history_size=10, history_seconds=60,
                         connection={"socket_connect_timeout": 1}, send_timeout=1)
        hub = Hub(live)
        lost = asyncio.Event()
        sink = hub.sink(Capture(), on_lost=lost.set)
        await hub.join(sink, ["instrument.1"])
        server.stop()
        await asyncio.wait_for(lost.wait(), 10)
        with pytest.raises(HubUnavailable):
            await hub.join(hub.sink(Capture()), ["instrument.2"])
