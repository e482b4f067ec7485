"""feeds/lease.py on the real database: one holder at a time, expiry by the database's clock, the
holder giving up before anyone can take over, and the fence that keeps a former holder's store
transactions out."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from feeds import events as ev
from feeds.lease import Lease, LeaseLost, fence
from feeds.models import FeedLease, FeedWorker, NewsItem, ProviderAccount
from feeds.store import events_store
from tests.factories import instrument

pytestmark = [pytest.mark.django_db(transaction=True)]


def account() -> int:
    return ProviderAccount.objects.create(provider="stocknews", endpoint="ws://127.0.0.1:9/ws", token="t").pk


def news(slug: str) -> ev.News:
    now = datetime.now(timezone.utc)
    return ev.News(provider="stocknews", code="AAPL", received_at=now, external_id=slug, headline=slug,
                   published_at=now)


@pytest.mark.asyncio
async def test_one_holder_at_a_time_and_a_clean_release_hands_over_at_once():
    account_id = await sync_to_async(account)()
    first, second = Lease(account_id, ttl=30), Lease(account_id, ttl=30)
    try:
        assert await first.try_acquire() and first.held()
        assert not await second.try_acquire()
        await first.release()
        assert not first.held()
        assert await second.try_acquire(), "a released lease is free at once, not after its 30 s"
        assert second.token == 2, "every acquisition takes a new fencing token"
        row = await sync_to_async(FeedLease.objects.get)(account_id=account_id)
        assert row.holder == second.identity
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_a_holder_that_cannot_renew_gives_up_before_a_standby_can_take_over():
    account_id = await sync_to_async(account)()
    holder, standby = Lease(account_id, ttl=1.2, poll=0.05), Lease(account_id, ttl=1.2, poll=0.05)
    try:
        assert await holder.try_acquire()
        # The holder never renews (as if its database were out of reach): its own deadline passes
        # first; the standby gets the lease only once the database's expiry has passed too.
        gave_up = acquired = None
        stop = asyncio.Event()
        waiting = asyncio.create_task(standby.wait_acquired(stop))
        async with asyncio.timeout(10):
            while acquired is None:
                if gave_up is None and not holder.held():
                    gave_up = time.monotonic()
                if acquired is None and waiting.done():
                    acquired = time.monotonic()
                await asyncio.sleep(0.005)
        assert waiting.result() is True
        assert gave_up is not None and gave_up < acquired, "two workers counted the lease as theirs at once"
    finally:
        await holder.close()
        await standby.close()


@pytest.mark.asyncio
async def test_keep_returns_when_another_worker_took_the_lease():
    account_id = await sync_to_async(account)()
    lease = Lease(account_id, ttl=2)
    try:
        assert await lease.try_acquire()
        keeping = asyncio.create_task(lease.keep())
        await asyncio.sleep(0)
        assert not keeping.done()
        await sync_to_async(FeedLease.objects.filter(account_id=account_id).update)(holder="elsewhere:1:ab")
        await asyncio.wait_for(keeping, 5)
        assert not lease.held()
    finally:
        await lease.close()


@pytest.mark.asyncio
async def test_keep_renews_past_the_lease_time():
    account_id = await sync_to_async(account)()
    lease = Lease(account_id, ttl=0.8)
    try:
        assert await lease.try_acquire()
        keeping = asyncio.create_task(lease.keep())
        done, _ = await asyncio.wait({keeping}, timeout=2.5)  # three lease times: renewals must have run
        assert not done and lease.held()
        keeping.cancel()
    finally:
        await lease.close()


def test_the_fence_refuses_a_former_holders_store_and_nothing_is_written():
    account_id = account()
    instrument("AAPL", stocknews_ticker="AAPL")
    FeedLease.objects.create(account_id=account_id, holder="a", token=7,
                             expires_at=datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert [n.external_id for n in events_store(events=[news("kept")], fence=lambda: fence(account_id, 7))] == ["kept"]
    with pytest.raises(LeaseLost):
        events_store(events=[news("refused")], fence=lambda: fence(account_id, 6))
    FeedLease.objects.filter(account_id=account_id).update(expires_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(LeaseLost):
        events_store(events=[news("expired")], fence=lambda: fence(account_id, 7))
    assert list(NewsItem.objects.values_list("external_id", flat=True)) == ["kept"]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_lease_that_expires_during_the_holders_store_is_taken_only_after_that_store_commits():
    """The fence's row lock: what the holder commits happens before the next holder exists, even
    when its lease runs out in the middle of a batch."""
    import threading

    from django.db import connections, transaction
    from django.db.models.functions import Now

    from feeds.lease import _acquire, _in

    account_id = account()
    FeedLease.objects.create(account_id=account_id, holder="old", token=1, expires_at=datetime.now(timezone.utc))
    FeedLease.objects.filter(account_id=account_id).update(expires_at=_in(0.5))
    fenced, release = threading.Event(), threading.Event()
    results = []

    def holder_store():
        with transaction.atomic():
            fence(account_id, 1)  # valid now; the lease runs out while this transaction is open
            fenced.set()
            release.wait(10)
        connections.close_all()

    def standby():
        fenced.wait(10)
        deadline = time.monotonic() + 10
        while not FeedLease.objects.filter(account_id=account_id, expires_at__lte=Now()).exists():
            assert time.monotonic() < deadline
        results.append(_acquire(account_id, "new", 9.0))
        connections.close_all()

    threads = [threading.Thread(target=holder_store), threading.Thread(target=standby)]
    for thread in threads:
        thread.start()
    try:
        fenced.wait(10)
        with connection.cursor() as cursor:  # until the standby's UPDATE queues behind the holder's row lock
            deadline = time.monotonic() + 10
            waiting = 0
            while not results and not waiting and time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                               "AND query LIKE 'UPDATE %%feeds_feedlease%%'")
                waiting = cursor.fetchone()[0]
        assert results == [] and waiting, "the standby acquired while the holder's store transaction was open"
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert results == [2]


@pytest.mark.asyncio
async def test_workers_announce_their_role_and_leave_the_list_when_closed():
    account_id = await sync_to_async(account)()
    holder, standby = Lease(account_id, ttl=30), Lease(account_id, ttl=30, poll=0.05)
    stop = asyncio.Event()
    try:
        assert await holder.try_acquire()
        waiting = asyncio.create_task(standby.wait_acquired(stop))
        async with asyncio.timeout(5):
            while await sync_to_async(FeedWorker.objects.count)() < 2:
                await asyncio.sleep(0.02)
        roles = dict(await sync_to_async(lambda: list(FeedWorker.objects.values_list("identity", "role")))())
        assert roles == {holder.identity: "holder", standby.identity: "standby"}
        stop.set()
        assert await waiting is False
    finally:
        await holder.close()
        await standby.close()
    assert await sync_to_async(FeedWorker.objects.count)() == 0
