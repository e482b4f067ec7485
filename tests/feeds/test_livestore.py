"""Numbering, history and recovery (feeds/livestore.py), on the real Redis and in memory: the two
backends keep one contract."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from django.conf import settings

from feeds.livestore import LocalLive, Outgoing, Position, RedisLive, event_frame_text


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
