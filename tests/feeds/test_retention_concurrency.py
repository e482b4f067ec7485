"""Retention beside other runs and inside a feed worker, on PostgreSQL: a part another run holds is
left to it, two runs at once do the work once between them, and `retention_loop` runs on its own
thread until cancelled."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from asgiref.sync import sync_to_async

from feeds.models import Bar, CrowdMention, NewsItem, RetentionRun
from feeds.retention import apply_retention, retention_loop
from feeds.retention_batches import advisory_lock_id
from tests.concurrency import LockGate, requires_postgres, start_together
from tests.factories import instrument

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 10, 17, tzinfo=UTC)
H1 = datetime(2026, 1, 30, 14, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def old_news(inst, n: int) -> None:
    for i in range(n):
        NewsItem.objects.create(instrument=inst, provider="stocknews", external_id=f"n{i}", headline="h",
                                published_at=NOW - timedelta(days=731, minutes=i), received_at=NOW)


@requires_postgres
@pytest.mark.django_db
def test_a_part_another_run_holds_is_left_to_it():
    aapl = instrument("AAPL")
    old_news(aapl, 3)

    with LockGate("SELECT pg_advisory_xact_lock(%s, %s)", *advisory_lock_id(f"news:*:{aapl.pk}")):
        report = apply_retention(now=NOW)
    [news_step] = [s for s in report.steps if s.kind == "news"]
    assert (news_step.busy, news_step.deleted, NewsItem.objects.count()) == (1, 0, 3)
    assert report.ok  # being done elsewhere is not a failure

    [news_step] = [s for s in apply_retention(now=NOW).steps if s.kind == "news"]
    assert (news_step.busy, news_step.deleted, NewsItem.objects.count()) == (0, 3, 0)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_do_the_work_once_between_them():
    instruments = [instrument(symbol) for symbol in ("AAPL", "MSFT", "NVDA", "AMD")]
    for inst in instruments:
        Bar.objects.bulk_create([Bar(instrument=inst, provider="insightsentry", interval="1m", start=H1 + m * M,
                                     open=m, high=m + 1, low=m - 1, close=m + 0.5, volume=1.0) for m in range(180)])
        CrowdMention.objects.bulk_create([
            CrowdMention(provider="stocktwits", message_id=f"{inst.symbol}{n}", symbol=inst.symbol, instrument=inst,
                         created_at=NOW - timedelta(days=8, seconds=n), seq_id="1") for n in range(50)])

    # Both runs wait on the gate at their first read, so they really run side by side.
    with LockGate("LOCK TABLE feeds_crowdmention IN ACCESS EXCLUSIVE MODE") as gate:
        running = start_together(lambda: apply_retention(now=NOW), lambda: apply_retention(now=NOW))
        gate.wait_for_waiters(2, running)
    reports = running.results()

    assert all(report.ok for report in reports)
    total = {}
    for report in reports:
        for step in report.steps:
            deleted, created = total.get(step.rule, (0, 0))
            total[step.rule] = (deleted + step.deleted, created + step.created)
    assert total["delete after 7 days"] == (200, 0)
    assert total["1m…30m → 1h after 30 days"] == (720, 12)
    assert sorted(Bar.objects.filter(instrument=instruments[0]).values_list("start", "open", "close")) == [
        (H1 + timedelta(hours=h), 60.0 * h, 60 * h + 59.5) for h in range(3)]
    assert Bar.objects.count() == 12 and not CrowdMention.objects.exists()


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_worker_loop_runs_at_once_on_its_own_thread_and_stops_when_cancelled():
    await sync_to_async(lambda: old_news(instrument("AAPL"), 2))()
    task = asyncio.create_task(retention_loop(provider="stocknews", interval=3600))

    deadline = time.monotonic() + 30
    while not await sync_to_async(RetentionRun.objects.filter(origin="worker:stocknews").exists)():
        assert not task.done(), task
        assert time.monotonic() < deadline, "the loop did not run"
        await asyncio.sleep(0.05)  # polling interval: the condition is checked each time
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = await sync_to_async(RetentionRun.objects.get)()
    assert (run.provider, run.ok) == ("stocknews", True)
    assert not await sync_to_async(NewsItem.objects.exists)()


@pytest.mark.asyncio
async def test_the_worker_loop_can_be_switched_off():
    await asyncio.wait_for(retention_loop(provider="stocknews", interval=0), timeout=5)
