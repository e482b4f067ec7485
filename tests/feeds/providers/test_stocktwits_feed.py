"""The StockTwits firehose worker against its SSE simulator, with the real database and live path:
resume without gap or duplicate, status codes, the size cap and awkward gzip splits."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async

from feeds.backoff import Backoff
from feeds.groups import instrument_group
from feeds.models import CrowdMention, FeedStatus, Instrument, ProviderAccount, SentimentSample, StreamCursor
from feeds.runner import run_feed
from feeds.simulators.stocktwits import StockTwitsSimulator
from tests.factories import instrument
from tests.live import listening

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
CREDS = ("firehose-user", "firehose-pass-123")
FAST = {"backoff": Backoff(base=0.01, cap=0.05)}


def account(sim: StockTwitsSimulator) -> None:
    ProviderAccount.objects.create(provider="stocktwits", endpoint=sim.url(), username=CREDS[0], password=CREDS[1])
    instrument("AAPL", name="")


@contextlib.asynccontextmanager
async def worker():
    stop = asyncio.Event()
    task = asyncio.create_task(run_feed("stocktwits", stop=stop, feed_kwargs=dict(FAST)))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def stored_ids() -> list[str]:
    return await sync_to_async(lambda: sorted(CrowdMention.objects.values_list("message_id", flat=True)))()


async def wait_rows(n: int) -> list[str]:
    async with asyncio.timeout(15):
        while len(ids := await stored_ids()) < n:
            await asyncio.sleep(0.02)
    return ids


def emit(sim, count: int) -> list[str]:
    return [str(sim.emit(["AAPL"])["message_id"]) for _ in range(count)]


async def test_a_cut_mid_event_resumes_with_exactly_the_expected_rows():
    async with StockTwitsSimulator([":".join(CREDS)], interval=None) as sim:
        await sync_to_async(account)(sim)
        sim.cut_mid_event_after = 4  # every connection dies inside its 5th event
        async with worker():
            await sim.wait_for(lambda: sim.open_streams == 1)
            expected = emit(sim, 10)
            ids = await wait_rows(10)
        assert sorted(expected) == ids  # no gap, and the unique key kept out every replay
        assert sim.connection_attempts >= 3
        # Each reconnect resumed from the last stored position, never further.
        delivered = {seq_id for connection in sim.sent for seq_id in connection}
        resumes = [path.split("seq_id=")[1] for path, _ in sim.requests if "seq_id=" in path]
        assert len(resumes) == sim.connection_attempts - 1 and set(resumes) <= delivered
        cursor = await sync_to_async(StreamCursor.objects.get)(provider="stocktwits")
        assert cursor.position == sim.sent[-1][-1]
        assert len(cursor.position) == 56


async def test_a_restarted_worker_resumes_from_the_stored_seq_id():
    async with StockTwitsSimulator([":".join(CREDS)], interval=None) as sim:
        await sync_to_async(account)(sim)
        async with worker():
            await sim.wait_for(lambda: sim.open_streams == 1)
            first = emit(sim, 3)
            await wait_rows(3)
        await sim.wait_for(lambda: sim.open_streams == 0)
        missed = emit(sim, 4)  # while no worker runs
        async with worker():
            ids = await wait_rows(7)
        assert ids == sorted(first + missed)
        assert sim.requests[-1][0].endswith(f"seq_id={sim.buffer[2].seq_id}")


async def test_per_minute_crowd_sentiment_is_stored_and_published():
    async with StockTwitsSimulator([":".join(CREDS)], interval=None) as sim:
        await sync_to_async(account)(sim)
        aapl = await sync_to_async(Instrument.objects.get)(symbol="AAPL")
        async with listening(instrument_group(aapl.id)) as inbox, worker():
            await sim.wait_for(lambda: sim.open_streams == 1)
            sim.emit(["AAPL"], sentiment_score=0.5)
            [first] = await inbox.events(1, timeout=10)
            sim.emit(["AAPL"], sentiment_score=-0.1)
            [second] = await inbox.events(1, timeout=10)
        assert first["kind"] == "sentiment" and first["volume"] == 1 and first["score"] == 0.5
        if second["external_id"] == first["external_id"]:  # same minute: the bucket is recomputed
            assert second["volume"] == 2 and second["score"] == pytest.approx(0.2)
        samples = await sync_to_async(lambda: list(SentimentSample.objects.values_list("volume", flat=True)))()
        assert sum(samples) == 2
        filled = (await sync_to_async(Instrument.objects.get)(pk=aapl.pk)).name
        assert filled  # the message's symbol title filled in the blank name


@pytest.mark.parametrize("status,state", [(401, "auth_failed"), (406, "refused")])
async def test_401_and_406_stop_without_a_retry_loop(status, state):
    async with StockTwitsSimulator([":".join(CREDS)], interval=None) as sim:
        await sync_to_async(account)(sim)
        if status == 401:
            await sync_to_async(ProviderAccount.objects.update)(password="wrong")
        else:
            sim.fail_with = 406
        code = await asyncio.wait_for(run_feed("stocktwits", stop=asyncio.Event(), feed_kwargs=dict(FAST)), 10)
    row = await sync_to_async(FeedStatus.objects.get)()
    assert row.state == state and f"HTTP {status}" in row.last_error
    assert sim.connection_attempts == 1 and code != 0


async def test_503_backs_off_and_recovers():
    async with StockTwitsSimulator([":".join(CREDS)], interval=None) as sim:
        await sync_to_async(account)(sim)
        sim.fail_with = 503
        async with worker():
            await sim.wait_for(lambda: sim.connection_attempts >= 3)
            sim.fail_with = None
            await sim.wait_for(lambda: sim.open_streams == 1)
            emit(sim, 1)
            await wait_rows(1)
        row = await sync_to_async(FeedStatus.objects.get)()
        assert row.reconnects >= 2


async def test_an_event_over_1_mib_is_counted_and_skipped_and_the_stream_goes_on():
    async with StockTwitsSimulator([":".join(CREDS)], interval=None, split_chunks=True) as sim:
        await sync_to_async(account)(sim)
        async with worker():
            await sim.wait_for(lambda: sim.open_streams == 1)
            sim.oversize_next = 1_200_000
            sim.emit(["AAPL"])
            after = emit(sim, 3)  # split into 1-7 byte HTTP chunks: gzip cut at awkward places
            ids = await wait_rows(3)
            async with asyncio.timeout(5):
                while (await sync_to_async(FeedStatus.objects.get)()).parse_errors < 1:
                    await asyncio.sleep(0.05)
        assert ids == sorted(after) and sim.connection_attempts == 1
