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


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_failed_store_shows_on_feed_status_and_in_the_metrics_until_a_batch_is_stored():
    from django.db import OperationalError

    from feeds.logging import register_secret
    from feeds.models import FeedStatus, ProviderAccount
    from feeds.status import FeedStatusReporter
    from tests.scrape import delta, metrics_port, scrape

    metrics_port()
    await sync_to_async(instrument)("AAPL")
    account = await sync_to_async(ProviderAccount.objects.create)(provider="stocknews", endpoint="ws://127.0.0.1:9/ws")
    register_secret("pg-password-0042")
    database_down = True

    def flaky_store(*, events):
        if database_down:
            raise OperationalError('connection to server failed: password "pg-password-0042" rejected')
        return events_store(events=events)

    reporter = FeedStatusReporter(account.pk, provider="stocknews")
    pipeline = Pipeline(store=flaky_store, status=reporter, provider="stocknews", sinks=[])
    await reporter.set_state("connected")
    before = scrape()
    await pipeline.submit([news("lost-1"), news("lost-2")])
    await pipeline.process(await pipeline._next_batch())

    row = await sync_to_async(FeedStatus.objects.get)(account=account)
    assert row.state == "degraded"
    assert row.last_error == 'store failed: OperationalError: connection to server failed: password "***" rejected'
    failed = scrape()
    assert delta(before, failed, "tickerwire_store_failures_total", provider="stocknews") == 1
    assert delta(before, failed, "tickerwire_events_dropped_total", provider="stocknews", reason="store_failed") == 2
    assert delta(before, failed, "tickerwire_events_stored_total", provider="stocknews") == 0
    assert failed[("tickerwire_feed_state", frozenset({("provider", "stocknews"), ("tickerwire_feed_state", "degraded")}))] == 1

    # A reconnect while the store still fails keeps it degraded: the link is up, the data is lost.
    await reporter.set_state("connecting")
    await reporter.set_state("connected")
    assert (await sync_to_async(FeedStatus.objects.get)(account=account)).state == "degraded"

    database_down = False
    await pipeline.submit([news("kept")])
    await pipeline.process(await pipeline._next_batch())
    row = await sync_to_async(FeedStatus.objects.get)(account=account)
    assert row.state == "connected" and "store failed" in row.last_error  # the last error stays readable
    recovered = scrape()
    assert delta(failed, recovered, "tickerwire_events_stored_total", provider="stocknews") == 1
    assert delta(failed, recovered, "tickerwire_store_failures_total", provider="stocknews") == 0
    assert reporter.states == ["connected", "degraded", "connecting", "degraded", "connected"]
    await get_channel_layer().flush()
