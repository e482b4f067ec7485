"""Numbering, history and recovery (feeds/livestore.py), on the real Redis and in memory: the two
backends keep one contract; and on two private Redis servers, what a failover to a replica that
lacks the last entries does to the numbers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio
from django.conf import settings

from feeds.livestore import LocalLive, Outgoing, Position, Recovery, RedisLive, event_frame_text
from tests.redisserver import RedisServer


def redis_live(**overrides) -> RedisLive:
    options = {"history_size": 50, "history_seconds": 60, **overrides}
    return RedisLive(url=settings.REDIS_URL, prefix=f"{settings.LIVE_PREFIX}-{uuid.uuid4().hex[:6]}",
                     connection=settings.REDIS_CONNECTION, send_timeout=3, **options)


def local_live(**overrides) -> LocalLive:
    return LocalLive(**{"history_size": 50, "history_seconds": 60, **overrides})


BACKENDS = pytest.mark.parametrize("make", [redis_live, local_live], ids=["redis", "memory"])


def body(n: int) -> str:
    return json.dumps({"kind": "news", "headline": f"headline {n}", "quote": 'a "quoted" word'})


@BACKENDS
@pytest.mark.asyncio
async def test_each_stream_numbers_its_own_events_from_one_and_unsequenced_frames_get_none(make):
    live = make()
    seqs = await live.publish([Outgoing("instrument.1", body(1)), Outgoing("instrument.2", body(2)),
                               Outgoing("instrument.1", body(3)), Outgoing("feeds.health", "{}", sequenced=False)])
    assert seqs == [1, 1, 2, 0]
    assert (await live.publish([Outgoing("instrument.1", body(4))])) == [3]


@BACKENDS
@pytest.mark.asyncio
async def test_a_position_read_before_any_event_keeps_its_epoch_when_events_come(make):
    live = make()
    first = (await live.read(["instrument.9"], {}))["instrument.9"]
    assert first.position.seq == 0 and first.frames is None  # no since: the browser takes its snapshot
    await live.publish([Outgoing("instrument.9", body(1))])
    again = (await live.read(["instrument.9"], {}))["instrument.9"]
    assert again.position == Position(first.position.epoch, 1)


@BACKENDS
@pytest.mark.asyncio
async def test_history_gives_exactly_the_missed_events_in_order(make):
    live = make()
    await live.publish([Outgoing("instrument.1", body(n)) for n in range(1, 8)])
    epoch = (await live.read(["instrument.1"], {}))["instrument.1"].position.epoch
    recovery = (await live.read(["instrument.1"], {"instrument.1": Position(epoch, 4)}))["instrument.1"]
    assert recovery.position == Position(epoch, 7)
    assert [seq for seq, _ in recovery.frames] == [5, 6, 7]
    assert [json.loads(text) for _, text in recovery.frames] == [
        json.loads(event_frame_text("instrument.1", epoch, n, body(n))) for n in (5, 6, 7)]
    # Up to date: recovered, nothing to send.
    assert (await live.read(["instrument.1"], {"instrument.1": Position(epoch, 7)}))["instrument.1"].frames == []


@BACKENDS
@pytest.mark.asyncio
async def test_no_recovery_past_the_history_another_epoch_or_a_future_position(make):
    live = make(history_size=5)
    await live.publish([Outgoing("instrument.1", body(n)) for n in range(1, 40)])
    epoch = (await live.read(["instrument.1"], {}))["instrument.1"].position.epoch
    for since in (Position(epoch, 1), Position("another", 38), Position(epoch, 99)):
        assert (await live.read(["instrument.1"], {"instrument.1": since}))["instrument.1"].frames is None, since
    recent = (await live.read(["instrument.1"], {"instrument.1": Position(epoch, 36)}))["instrument.1"]
    assert [seq for seq, _ in recent.frames] == [37, 38, 39]


@pytest.mark.asyncio
async def test_the_redis_script_builds_the_same_text_as_python():
    live = redis_live()
    tricky = json.dumps({"headline": "ünïcode \u2014 \\ backslash \" quote", "n": 1.5})
    await live.publish([Outgoing("audience.team-3", tricky)])
    recovery = (await live.read(["audience.team-3"], {"audience.team-3": Position("x", 0)}))["audience.team-3"]
    epoch = recovery.position.epoch
    again = (await live.read(["audience.team-3"], {"audience.team-3": Position(epoch, 0)}))["audience.team-3"]
    assert again.frames == [(1, event_frame_text("audience.team-3", epoch, 1, tricky))]


@pytest.mark.asyncio
async def test_publishers_racing_on_one_stream_never_share_or_skip_a_seq():
    lives = [redis_live() for _ in range(4)]
    prefix = lives[0].prefix
    for live in lives[1:]:
        live.prefix = prefix

    async def publisher(live, n):
        out = []
        for i in range(25):
            out += await live.publish([Outgoing("instrument.5", body(n * 100 + i)), Outgoing("instrument.5", body(i))])
        return out

    results = await asyncio.gather(*(publisher(live, n) for n, live in enumerate(lives)))
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, 201))


async def _until(condition, *, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_a_promoted_replica_lacking_the_last_entries_starts_a_new_epoch_so_no_seq_is_reused():
    """Sentinel's failover, step by step: the replica has 8 events when it is promoted; the old
    primary acknowledged 2 more, which a browser already shows (seq 9 and 10). Numbering on from 8
    under the same epoch would give the next event seq 9, which that browser would drop as a
    duplicate. The new primary starts a new epoch instead: the browser sees the epoch change and
    resyncs, and a watch with its old position is answered "not recovered" (snapshot)."""
    stream = "instrument.1"
    with RedisServer() as old_server, RedisServer() as new_server:
        prefix = f"twfail-{uuid.uuid4().hex[:6]}"
        old, new = (RedisLive(url=server.url, prefix=prefix, history_size=50, history_seconds=60,
                              connection={"socket_connect_timeout": 2}, send_timeout=3)
                    for server in (old_server, new_server))
        old_client, new_client = (redis.asyncio.Redis.from_url(server.url) for server in (old_server, new_server))
        try:
            await old_client.config_set("repl-diskless-sync-delay", 0)  # Redis 7 waits 5 s for more replicas
            # The replica loads the copy it receives straight from the socket: no dump.rdb in the work tree.
            await new_client.config_set("repl-diskless-load", "on-empty-db")
            await new_client.replicaof("127.0.0.1", old_server.port)
            await old.publish([Outgoing(stream, body(n)) for n in range(1, 9)])
            pos = f"{prefix}:live-pos:{stream}"

            async def replica_has_8() -> bool:
                return await new_client.hget(pos, "seq") == b"8"

            await _until(replica_has_8)  # replication is asynchronous: wait for it, as a healthy replica is
            await new_client.replicaof("NO", "ONE")  # promoted (what Sentinel sends); the old primary goes on
            assert await old.publish([Outgoing(stream, body(9)), Outgoing(stream, body(10))]) == [9, 10]
            browser = (await old.read([stream], {}))[stream].position
            assert browser.seq == 10
            replicated = await new_client.hmget(pos, "epoch", "seq")
            assert replicated == [browser.epoch.encode(), b"8"]  # the replica's copy: 2 entries short

            # The failover: publishers and readers now reach the promoted replica.
            async with new_client.pubsub() as hub:
                await hub.subscribe(new.channel(stream))
                assert await new.publish([Outgoing(stream, body(11))]) == [1]
                async with asyncio.timeout(5):
                    while (message := await hub.get_message(timeout=1)) is None or message["type"] != "message":
                        pass
            frame = json.loads(message["data"].split(b"\n", 1)[1])
            assert frame["epoch"] != browser.epoch and frame["seq"] == 1 and frame["event"] == json.loads(body(11))
            for since in (browser, Position(browser.epoch, 8)):  # neither can trust the old numbers
                assert (await new.read([stream], {stream: since}))[stream].frames is None, since
            current = Position(frame["epoch"], 1)
            assert (await new.read([stream], {stream: current}))[stream] == Recovery(current, [])
            # The old epoch's history went with its position: what is recovered is the new one's only.
            recovered = (await new.read([stream], {stream: Position(frame["epoch"], 0)}))[stream].frames
            assert recovered == [(1, event_frame_text(stream, frame["epoch"], 1, body(11)))]
        finally:
            await old_client.aclose()
            await new_client.aclose()


@pytest.mark.asyncio
async def test_positions_keep_their_epoch_on_the_server_that_wrote_them_across_reads_and_publishes():
    live = redis_live()
    await live.publish([Outgoing("instrument.3", body(1))])
    epoch = (await live.read(["instrument.3"], {}))["instrument.3"].position.epoch
    for _ in range(3):
        await live.publish([Outgoing("instrument.3", body(2))])
        assert (await live.read(["instrument.3"], {}))["instrument.3"].position.epoch == epoch
    assert (await live.read(["instrument.3"], {}))["instrument.3"].position.seq == 4


@pytest.mark.asyncio
async def test_a_batch_sent_again_after_its_reply_was_lost_is_numbered_and_published_once(monkeypatch):
    """redis-py re-sends a command whose connection broke before the reply came (our Retry policy):
    the script may have run. The same batch sent twice must not become two events for browsers."""
    from feeds import livestore

    live = redis_live()
    sent = []
    real = livestore._publish_script

    async def twice(client, keys, args):  # what a retry after a lost reply does: the same command again
        sent.append((keys, args))
        first = await real(client, keys, args)
        assert await real(client, keys, args) == first
        return first

    subscriber = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(live.channel("instrument.7"))
    try:
        monkeypatch.setattr(livestore, "_publish_script", twice)
        assert await live.publish([Outgoing("instrument.7", body(1)), Outgoing("instrument.7", body(2))]) == [1, 2]
        monkeypatch.setattr(livestore, "_publish_script", real)
        assert await live.publish([Outgoing("instrument.7", body(3))]) == [3]
        messages = []
        async with asyncio.timeout(5):
            while len(messages) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message:
                    messages.append(message["data"].split(b" ", 1)[0])
        assert messages == [b"1", b"2", b"3"]
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
        history = (await live.read(["instrument.7"], {"instrument.7": Position("x", 0)}))["instrument.7"]
        assert history.position.seq == 3
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
