"""The pipeline stores in batches and publishes only new events, through the real live path."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async

from feeds import events as ev
from feeds.backoff import Backoff
from feeds.groups import instrument_group
from feeds.pipeline import Pipeline
from feeds.store import events_store
from tests.factories import instrument
from tests.live import listening

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

    async with listening(instrument_group(aapl.id)) as inbox:
        pipeline = Pipeline(store=counting_store, max_delay=0.2)
        await pipeline.submit([news("a"), news("b"), news("a")])
        await pipeline.process(await pipeline._next_batch())
        assert calls == [3]
        received = [await inbox.next() for _ in range(2)]
        await inbox.nothing(0.3)  # the repeat was not published
    assert [m["event"]["external_id"] for m in received] == ["a", "b"]
    assert received[0] == {"type": "event", "stream": instrument_group(aapl.id), "epoch": received[0]["epoch"],
                           "seq": received[0]["seq"], "event": received[0]["event"]}
    assert received[1]["seq"] == received[0]["seq"] + 1
    assert received[0]["event"]["instrument_id"] == aapl.id
    assert pipeline.published == 2


def post(message: int, symbol: str) -> ev.CrowdPost:
    return ev.CrowdPost(provider="stocktwits", code=symbol, received_at=T, external_id=str(message),
                        cursor=f"{message:056d}", ts=T, score=0.5)


def fast_retries() -> Backoff:
    return Backoff(base=0.005, cap=0.02)


async def until(predicate, *, timeout: float = 10, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_frame_is_never_split_across_batches_so_a_cursor_commits_with_all_its_rows():
    from feeds.models import CrowdMention, StreamCursor

    batches: list[list[tuple[str, str]]] = []
    cursors: list[str | None] = []

    def recording_store(*, events):
        batches.append([(e.external_id, e.code) for e in events])
        new = events_store(events=events)
        cursors.append(StreamCursor.objects.values_list("position", flat=True).first())
        return new

    # Messages of 3 symbols (a big one of 7) against batches of at most 5 events.
    messages = {m: [post(m, s) for s in ("AAPL", "MSFT", "NVDA", "AMD", "TSLA", "META", "DIS")[:7 if m == 4 else 3]]
                for m in range(1, 8)}
    pipeline = Pipeline(store=recording_store, max_batch=5, max_delay=0.2, sinks=[])
    for unit in messages.values():
        await pipeline.submit(unit)
    runner = asyncio.create_task(pipeline.run())
    try:
        await asyncio.wait_for(pipeline.wait_idle(), 10)
    finally:
        runner.cancel()
    whole = {m: sorted((str(m), p.code) for p in unit) for m, unit in messages.items()}
    assert [sorted(batch) for batch in batches] == [whole[m] for m in range(1, 8)]  # one message each
    assert cursors == [f"{m:056d}" for m in range(1, 8)]  # each committed with all of its rows
    assert await sync_to_async(CrowdMention.objects.count)() == 3 * 6 + 7


@pytest.mark.asyncio
async def test_whole_frames_share_a_batch_up_to_its_size():
    batches: list[int] = []

    def sizes(*, events):
        batches.append(len(events))
        return []

    pipeline = Pipeline(store=sizes, max_batch=5, max_delay=0.2, sinks=[])
    for size in (2, 2, 1, 3, 2, 6, 1):
        await pipeline.submit([news(f"n{size}-{i}") for i in range(size)])
    runner = asyncio.create_task(pipeline.run())
    try:
        await asyncio.wait_for(pipeline.wait_idle(), 10)
    finally:
        runner.cancel()
    assert batches == [5, 5, 6, 1]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_lost_connection_is_retried_with_the_feed_degraded_meanwhile_and_nothing_dropped():
    from django.db import OperationalError

    from feeds.logging import register_secret
    from feeds.models import FeedStatus, NewsItem, ProviderAccount
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
    pipeline = Pipeline(store=flaky_store, status=reporter, provider="stocknews", sinks=[], store_attempts=10_000,
                        retry_backoff=fast_retries)
    await reporter.set_state("connected")
    before = scrape()
    runner = asyncio.create_task(pipeline.run())
    try:
        await pipeline.submit([news("kept-1"), news("kept-2")])
        await until(lambda: pipeline.failed_batches >= 2, what="the batch to be retried")

        row = await sync_to_async(FeedStatus.objects.get)(account=account)
        assert row.state == "degraded"
        assert row.last_error == 'store failed: OperationalError: connection to server failed: password "***" rejected'
        failing = scrape()
        assert delta(before, failing, "tickerwire_store_failures_total", provider="stocknews") >= 2
        assert delta(before, failing, "tickerwire_events_dropped_total", provider="stocknews",
                     reason="store_failed") == 0
        assert failing[("tickerwire_feed_state",
                        frozenset({("provider", "stocknews"), ("tickerwire_feed_state", "degraded")}))] == 1

        # A reconnect while the store still fails keeps it degraded: the link is up, nothing is stored.
        await reporter.set_state("connecting")
        await reporter.set_state("connected")
        assert (await sync_to_async(FeedStatus.objects.get)(account=account)).state == "degraded"

        database_down = False
        await asyncio.wait_for(pipeline.wait_idle(), 10)
    finally:
        runner.cancel()
    row = await sync_to_async(FeedStatus.objects.get)(account=account)
    assert row.state == "connected" and "store failed" in row.last_error  # the last error stays readable
    assert sorted(await sync_to_async(lambda: list(NewsItem.objects.values_list("external_id", flat=True)))()) == \
        ["kept-1", "kept-2"]
    recovered = scrape()
    assert delta(before, recovered, "tickerwire_events_stored_total", provider="stocknews") == 2
    assert delta(before, recovered, "tickerwire_events_dropped_total", provider="stocknews", reason="store_failed") == 0
    assert reporter.states == ["connected", "degraded", "connecting", "degraded", "connected"]


@pytest.mark.asyncio
async def test_a_database_out_of_reach_for_every_attempt_ends_the_pipeline_after_a_bounded_number():
    from django.db import OperationalError

    from feeds.pipeline import StoreUnavailable
    from feeds.status import MemoryStatus

    calls = []

    def down(*, events):
        calls.append(len(events))
        raise OperationalError("connection refused")

    status = MemoryStatus(provider="stocknews")
    await status.set_state("connected")
    pipeline = Pipeline(store=down, status=status, sinks=[], store_attempts=3, retry_backoff=fast_retries)
    await pipeline.submit([news("a"), news("b")])
    await pipeline.submit([news("c")])
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(pipeline.run(), 10)
    assert calls == [3, 3, 3]  # the same batch each time, never shortened, never given up silently
    assert status.state == "degraded" and pipeline.dropped_units == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_frame_the_database_rejects_is_dropped_alone_and_counted():
    from django.db import IntegrityError

    from feeds.models import NewsItem
    from feeds.status import MemoryStatus
    from tests.scrape import delta, metrics_port, scrape

    metrics_port()
    await sync_to_async(instrument)("AAPL")
    calls: list[list[str]] = []

    def store(*, events):
        calls.append([e.external_id for e in events])
        if any(e.external_id == "poison" for e in events):
            raise IntegrityError("value violates a constraint")  # comes from the data: a retry fails again
        return events_store(events=events)

    status = MemoryStatus(provider="stocknews")
    await status.set_state("connected")
    pipeline = Pipeline(store=store, status=status, provider="stocknews", sinks=[], max_delay=0.2,
                        retry_backoff=fast_retries)
    before = scrape()
    for unit in (["a"], ["poison", "b"], ["c"]):
        await pipeline.submit([news(i) for i in unit])
    await pipeline.process(await pipeline._next_batch())
    assert calls == [["a", "poison", "b", "c"], ["a"], ["poison", "b"], ["c"]]
    assert sorted(await sync_to_async(lambda: list(NewsItem.objects.values_list("external_id", flat=True)))()) == \
        ["a", "c"]
    assert delta(before, scrape(), "tickerwire_events_dropped_total", provider="stocknews", reason="store_failed") == 2
    assert pipeline.dropped_units == 1 and status.state == "connected"


@pytest.mark.asyncio
async def test_a_full_queue_holds_the_transport_back_by_events_not_frames():
    pipeline = Pipeline(store=lambda *, events: [], max_queue=5, sinks=[])
    await pipeline.submit([news("a"), news("b"), news("c")])
    await pipeline.submit([news("d"), news("e"), news("f")])  # room was left: in, past the bound
    blocked = asyncio.create_task(pipeline.submit([news("g")]))
    await asyncio.sleep(0)  # one turn of the loop: the submit runs until it has to wait
    assert not blocked.done() and not pipeline._room.is_set()  # waiting for room
    await pipeline.process(await pipeline._next_batch())  # stores 6 events: room again
    await asyncio.wait_for(blocked, 5)


@pytest.mark.asyncio
async def test_at_light_load_an_event_is_stored_at_once_and_under_load_batches_grow_up_to_their_bound():
    import threading

    batches: list[list[str]] = []
    release = threading.Event()

    def slow_store(*, events):  # the first batch holds the store until released: a busy database
        batches.append([e.external_id for e in events])
        if len(batches) == 1:
            release.wait(10)
        return []

    pipeline = Pipeline(store=slow_store, max_batch=6, sinks=[])  # the default max_delay: a few ms at most
    runner = asyncio.create_task(pipeline.run())
    try:
        await pipeline.submit([news("first")])
        await until(lambda: batches, what="the first event stored on its own, without waiting for a batch to fill")
        for i in range(10):  # arrive while the first batch is being stored
            await pipeline.submit([news(f"n{i}")])
        release.set()
        await asyncio.wait_for(pipeline.wait_idle(), 10)
    finally:
        release.set()
        runner.cancel()
    assert batches == [["first"], [f"n{i}" for i in range(6)], [f"n{i}" for i in range(6, 10)]]


def flag_news_sink(*, events):
    """A sink (named by dotted path, as in settings): one derived event per news item it sees."""
    return [ev.Alert(provider="rules", code=e.code, received_at=T, external_id=f"rule-{e.external_id}", triggered_at=T)
            for e in events if isinstance(e, ev.News)]


def failing_sink(*, events):
    raise RuntimeError("a rule evaluation bug")


@pytest.mark.asyncio
async def test_stored_events_are_published_before_the_sinks_run_and_what_they_derive_follows():
    published: list[list[str]] = []

    async def publish(events):
        published.append([e.external_id for e in events])
        return len(published[-1])

    pipeline = Pipeline(store=lambda *, events: events, publish=publish,
                        sinks=[f"{__name__}.failing_sink", f"{__name__}.flag_news_sink"])
    await pipeline.submit([news("a"), news("b")])
    await pipeline.process(await pipeline._next_batch())
    assert published == [["a", "b"], ["rule-a", "rule-b"]]  # a failing sink costs only itself
    assert pipeline.published == 4


@pytest.mark.asyncio
async def test_a_lone_event_goes_at_once_but_in_a_stream_a_batch_waits_a_little_for_more():
    loop = asyncio.get_running_loop()
    pipeline = Pipeline(store=lambda *, events: [], max_delay=0.5, sinks=[])

    async def later(external_id: str) -> None:
        await asyncio.sleep(0.1)
        await pipeline.submit([news(external_id)])

    await pipeline.submit([news("lone")])
    started = loop.time()
    assert [[e.external_id for e in unit] for unit in await pipeline._next_batch()] == [["lone"]]
    assert loop.time() - started < 0.25  # no stream yet: no waiting for company

    for i in range(40):  # a stream: events far less than max_delay / 4 apart
        await pipeline.submit([news(f"s{i}")])
    late = asyncio.create_task(later("late"))
    batch = await pipeline._next_batch()
    assert [unit[0].external_id for unit in batch] == [f"s{i}" for i in range(40)] + ["late"]
    await late

    # Still a stream by its recent pace: even an event that finds the queue empty waits for company.
    late = asyncio.create_task(later("next"))
    also = asyncio.create_task(later("and next"))
    batch = await pipeline._next_batch()
    assert sorted(unit[0].external_id for unit in batch) == ["and next", "next"]
    await asyncio.gather(late, also)
