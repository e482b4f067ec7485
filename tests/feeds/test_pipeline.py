"""The pipeline stores in batches and publishes only new events, through the real layer."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from feeds import events as ev
from feeds.groups import instrument_group
from feeds.pipeline import Pipeline
from feeds.store import events_store
from tests.factories import instrument

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)


def news(external_id: str) -> ev.News:
    return ev.News(provider="stocknews", code="AAPL", received_at=T, external_id=external_id, headline=external_id, published_at=T)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_batches_are_stored_in_one_call_and_new_events_published():
    aapl = await sync_to_async(instrument)("AAPL")
    calls: list[int] = []

    def counting_store(*, events):
        calls.append(len(events))
        return events_store(events=events)

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(instrument_group(aapl.id), channel)
    pipeline = Pipeline(store=counting_store, max_delay=0.2)
    await pipeline.submit([news("a"), news("b"), news("a")])
    await pipeline.process(await pipeline._next_batch())
    assert calls == [3]
    received = [json.loads((await asyncio.wait_for(layer.receive(channel), 5))["text"]) for _ in range(2)]
    assert [m["event"]["external_id"] for m in received] == ["a", "b"]
    assert received[0] == {"type": "event", "event": received[0]["event"]}
    assert received[0]["event"]["instrument_id"] == aapl.id
    assert pipeline.published == 2
    await layer.group_discard(instrument_group(aapl.id), channel)
    await layer.flush()
