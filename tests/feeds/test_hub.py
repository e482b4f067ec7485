"""The process' fan-out (feeds/hub.py) on the real Redis: a join returns once every later event
arrives; one subscription serves every local socket; leaving unsubscribes; control messages reach
the consumer; a lost subscription closes every socket so its browser resyncs; through Sentinel, the
next subscription after a failover is on the new primary."""

from __future__ import annotations

import asyncio
import json

import pytest

from feeds.broadcast import publish_revoke
from feeds.hub import Hub, HubUnavailable
from feeds.livestore import Outgoing, Position, RedisLive
from feeds.sinks import Frame
from project.redisclient import redis_target
from tests.feeds.test_livestore import redis_live
from tests.redisserver import RedisServer
from tests.redissentinel import SentinelGroup

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


class CountingLive:
    """The real Redis backend, counting its position reads and the streams and since each carried."""

    def __init__(self, live) -> None:
        self.live, self.reads = live, []

    async def read(self, streams, since):
        self.reads.append((list(streams), dict(since)))
        return await self.live.read(streams, since)


async def counted_hub(*published: Outgoing) -> tuple[Hub, CountingLive, str]:
    """A hub whose position reads go through a counter (subscriptions are not involved), after
    `published` went out; and the streams' epoch."""
    live = redis_live()
    counting = CountingLive(live)
    hub = Hub(live)
    hub.live = counting
    await live.publish(list(published))
    epoch = (await live.read([published[0].stream], {}))[published[0].stream].position.epoch
    return hub, counting, epoch


async def test_position_reads_asked_meanwhile_share_one_round_trip_each_getting_its_own_streams():
    hub, counting, _ = await counted_hub(Outgoing("instrument.1", '{"n":1}'), Outgoing("instrument.2", '{"n":2}'))
    asks = [["instrument.1"], ["instrument.2"], ["instrument.1", "instrument.2"]] * 10
    answers = await asyncio.gather(*(hub.read(streams, {}) for streams in asks))
    # All thirty were asked before the reader's first turn: one round trip, each stream once.
    assert len(counting.reads) == 1 and sorted(counting.reads[0][0]) == ["instrument.1", "instrument.2"]
    # Asked while a read is on its way: the next one.
    first = asyncio.ensure_future(hub.read(["instrument.1"], {}))
    while not counting.reads[1:]:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(hub.read(["instrument.2"], {}))
    third = asyncio.ensure_future(hub.read(["instrument.1"], {}))
    await asyncio.gather(first, second, third)
    assert [sorted(streams) for streams, _ in counting.reads[1:]] == [["instrument.1"], ["instrument.1", "instrument.2"]]
    for streams, answer in zip(asks, answers):
        assert sorted(answer) == sorted(streams)
        assert all(recovery.frames is None for recovery in answer.values())  # nobody asked for history
    assert {answer["instrument.1"].position.seq for answer in answers if "instrument.1" in answer} == {1}


async def test_a_stream_asked_with_different_since_goes_in_separate_reads_and_each_gets_its_history():
    hub, counting, epoch = await counted_hub(Outgoing("instrument.1", '{"n":1}'), Outgoing("instrument.1", '{"n":2}'))
    fresh, from_one, from_zero = await asyncio.gather(
        hub.read(["instrument.1"], {}), hub.read(["instrument.1"], {"instrument.1": Position(epoch, 1)}),
        hub.read(["instrument.1"], {"instrument.1": Position(epoch, 0)}))
    assert fresh["instrument.1"].frames is None
    assert [seq for seq, _ in from_one["instrument.1"].frames] == [2]
    assert [seq for seq, _ in from_zero["instrument.1"].frames] == [1, 2]
    assert len(counting.reads) == 3 and all(len(streams) == 1 for streams, _ in counting.reads)


async def test_a_failed_position_read_fails_every_request_it_carried():
    class Failing:
        async def read(self, streams, since):
            raise ConnectionError("redis went away")

    hub = Hub(redis_live())
    hub.live = Failing()
    results = await asyncio.gather(hub.read(["instrument.1"], {}), hub.read(["instrument.2"], {}),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_read_redis_refuses_for_one_request_fails_that_request_only():
    # A since past Redis' 64-bit stream ids makes the real script fail (the consumer refuses such a
    # since before it gets here; this is the hub's own guard): its batch neighbours still get answers.
    hub, counting, epoch = await counted_hub(Outgoing("instrument.1", '{"n":1}'), Outgoing("instrument.2", '{"n":2}'))
    good, bad, other = await asyncio.gather(
        hub.read(["instrument.1"], {}), hub.read(["instrument.2"], {"instrument.2": Position(epoch, 2**64)}),
        hub.read(["instrument.2", "instrument.1"], {}), return_exceptions=True)
    assert good["instrument.1"].position.seq == 1
    assert other["instrument.2"].position.seq == 1
    assert isinstance(bad, Exception) and "ID" in str(bad).upper()
    assert len(counting.reads) == 4  # the batch, then each of its three requests alone


async def test_a_cancelled_reader_fails_every_request_still_waiting_instead_of_leaving_it_hanging():
    started = asyncio.Event()

    class Stuck:
        async def read(self, streams, since):
            started.set()
            await asyncio.Event().wait()  # never answers

    hub = Hub(redis_live())
    hub.live = Stuck()
    first = asyncio.ensure_future(hub.read(["instrument.1"], {}))
    await started.wait()
    second = asyncio.ensure_future(hub.read(["instrument.2"], {}))  # queued behind the stuck read
    await asyncio.sleep(0)
    hub._reader_of_positions.cancel()
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert [type(r) for r in results] == [HubUnavailable, HubUnavailable]


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


@pytest.mark.timeout(60)
async def test_through_sentinel_a_failover_closes_the_sockets_then_the_hub_and_publisher_use_the_new_primary(
        tmp_path):
    group = SentinelGroup(tmp_path)
    await asyncio.to_thread(group.start)
    try:
        target = redis_target(sentinels=group.sentinels_setting.split(","))  # as settings pass REDIS_SENTINELS
        live = RedisLive(target=target, prefix="twsentinel", history_size=10, history_seconds=60,
                         connection={"socket_connect_timeout": 1}, send_timeout=1)
        hub = Hub(live)
        lost, before = asyncio.Event(), Capture()
        await hub.join(hub.sink(before, on_lost=lost.set), ["instrument.1"])
        assert hub._subscription.server == f"127.0.0.1:{group.primary_port}"
        await live.publish([Outgoing("instrument.1", '{"n":1}')])
        (first,) = await before.wait_for(1)

        old = await asyncio.to_thread(group.kill_primary)
        await asyncio.wait_for(lost.wait(), 5)  # the subscription died with the primary: sockets close
        new = await asyncio.to_thread(group.wait_for_failover, old)
        after = Capture()
        async with asyncio.timeout(15):  # a browser's reconnects, until the hub's backoff lets one through
            while True:
                try:
                    await hub.join(hub.sink(after), ["instrument.1"])
                    break
                except HubUnavailable:
                    await asyncio.sleep(0.1)
        assert hub._subscription.server == f"127.0.0.1:{new}"
        assert await live.publish([Outgoing("instrument.1", '{"n":2}')]) == [1]  # a new epoch: another server
        (second,) = await after.wait_for(1)
        assert second["event"] == {"n": 2} and second["epoch"] != first["epoch"]
    finally:
        await asyncio.to_thread(group.stop)
