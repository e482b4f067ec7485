"""Feed status: the heartbeat every write carries, and `degraded` while batches fail to store."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from feeds.models import FeedStatus, ProviderAccount
from feeds.status import FeedStatusReporter, MemoryStatus

pytestmark = pytest.mark.asyncio


async def test_degraded_overlays_only_a_connected_link():
    status = MemoryStatus(provider="stocknews")
    await status.set_state("backing_off")
    await status.store_failed("store failed: OperationalError: gone")
    assert status.state == "backing_off"  # not receiving anyway: the link state says more
    await status.set_state("connected")
    assert status.state == "degraded" and status.last_error == "store failed: OperationalError: gone"
    await status.store_succeeded()
    assert status.state == "connected"
    await status.store_succeeded()  # nothing changed: no new state entered
    assert status.states == ["backing_off", "backing_off", "degraded", "connected"]


@pytest.mark.django_db(transaction=True)
async def test_every_write_carries_a_newer_heartbeat():
    account = await sync_to_async(ProviderAccount.objects.create)(provider="stocknews", endpoint="ws://127.0.0.1:9/ws")
    reporter = FeedStatusReporter(account.pk, provider="stocknews")
    await reporter.set_state("connected")
    first = (await sync_to_async(FeedStatus.objects.get)(account=account)).heartbeat_at
    assert first is not None
    async with asyncio.timeout(5):
        while True:  # the periodic flush is the heartbeat; it writes even when nothing arrives
            await reporter.flush()
            beat = (await sync_to_async(FeedStatus.objects.get)(account=account)).heartbeat_at
            if beat > first:
                break
            await asyncio.sleep(0.01)
