"""PostgreSQL connections killed under a feed worker (`pg_terminate_backend`, as a server restart or
a failover does): the worker reconnects by itself, retries the batch it was storing instead of
dropping it, shows `degraded` while storing fails, and in the end every message is stored once.

A worker makes all its database calls on one thread (asgiref's thread-sensitive executor), so the
pipeline, the FeedStatus reporter, the watchlist poller and the StockTwits cursor read share one
connection: each of them must survive finding it dead.
"""

from __future__ import annotations

import asyncio
import signal

import psycopg
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from feeds.models import FeedStatus, ProviderAccount, StreamCursor
from feeds.providers.stocktwits.feed import stored_cursor
from feeds.runner import _follow_watchlists
from feeds.simulators.stocktwits import StockTwitsSimulator
from feeds.status import FeedStatusReporter
from tests import postgres
from tests.concurrency import requires_postgres
from tests.e2e.conftest import wait_until
from tests.factories import team_with_watchlist
from tests.simthread import simulator_thread
from tests.workerprocess import Sql, WorkerProcess

USER, PASSWORD = "firehose-pg", "pg-outage-pass-7"
SYMBOLS = ["AAPL", "MSFT", "NVDA"]


def _waiting_on_a_lock(db: Sql) -> list[int]:
    return [pid for (pid,) in db.rows("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock'")]


def _terminate_all_but(db: Sql, *keep: int) -> int:
    """Terminate every session on the database but the test's own; returns how many."""
    return len(db.rows("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> ALL(%s)", list(keep)))


@requires_postgres
def test_a_worker_rides_out_terminated_connections_and_stores_every_message_once(tmp_path):
    simulator = StockTwitsSimulator([f"{USER}:{PASSWORD}"], interval=None, keepalive_interval=60, seed=3)
    with postgres.fresh_database("twpgkill", migrated=True) as url, simulator_thread(simulator) as sim:
        workers = WorkerProcess(url, log=tmp_path / "worker.log", FEEDS_WATCH_POLL_SECONDS="0.2")
        workers.manage("provider", "set", "stocktwits", "--endpoint", simulator.url(), "--username", USER,
                       "--password", PASSWORD, "--enable")
        db, gate = Sql(url), Sql(url)
        ours = (db.value("SELECT pg_backend_pid()"), gate.value("SELECT pg_backend_pid()"))
        sent: list[dict] = []

        def emit(count: int) -> None:
            sent.extend(sim.call(lambda: [simulator.emit(SYMBOLS) for _ in range(count)]))

        def state() -> tuple[str, str] | None:
            rows = db.rows("SELECT state, last_error FROM feeds_feedstatus")
            return rows[0] if rows else None

        def rows() -> int:
            return db.value("SELECT count(*) FROM feeds_crowdmention")

        worker = workers.start("stocktwits")
        try:
            wait_until(lambda: (state() or ("",))[0] == "connected", what="the worker to connect")
            emit(20)
            wait_until(lambda: rows() == 60, what="the first messages to be stored")

            # 1. Kill the connection while it stores a batch. Our lock on the table holds the
            # batch inside its INSERT, so the kill lands mid-transaction and the failure lasts.
            gate.conn.execute("BEGIN")
            gate.conn.execute("LOCK TABLE feeds_crowdmention IN SHARE MODE")
            emit(20)
            first = wait_until(lambda: _waiting_on_a_lock(db), what="a batch to wait on the lock")
            _terminate_all_but(db, *ours)
            wait_until(lambda: (state() or ("",))[0] == "degraded", what="FeedStatus to show the failure")
            assert "store failed" in state()[1]
            # Retried on a new connection, which we kill as well (with whatever else it has open).
            wait_until(lambda: set(_waiting_on_a_lock(db)) - set(first), what="the batch to be retried")
            assert _terminate_all_but(db, *ours) >= 1
            wait_until(lambda: _waiting_on_a_lock(db), what="the batch to be retried again")
            assert state()[0] == "degraded"
            gate.conn.execute("COMMIT")  # the database is healthy again
            wait_until(lambda: rows() == 120 and state()[0] == "connected", what="the worker to recover")

            # 2. Kill it while idle: the status reporter (its heartbeat) and the poller meet it first.
            killed_at = db.value("SELECT now()")
            assert _terminate_all_but(db, *ours) >= 1
            wait_until(lambda: db.value("SELECT heartbeat_at > %s FROM feeds_feedstatus", killed_at),
                       what="the status reporter to write again")
            emit(20)
            wait_until(lambda: rows() == 180, what="messages after the idle kill to be stored")

            assert worker.poll() is None, workers.log_text()
            stored = db.rows("SELECT message_id, symbol, count(*) FROM feeds_crowdmention GROUP BY 1, 2")
            assert {(m, s) for m, s, _ in stored} == {(str(m["message_id"]), s) for m in sent for s in SYMBOLS}
            assert {n for _, _, n in stored} == {1}
            assert db.value("SELECT position FROM feeds_streamcursor") == sent[-1]["seq_id"]
            assert state()[0] == "connected"
            log = workers.log_text()
            assert "could not write feed status" not in log and "could not read the watched" not in log, log
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(15) == 0, workers.log_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            gate.close()
            db.close()


# -- each database user of a worker, alone, after its connection was terminated ---------------------


@pytest_asyncio.fixture
async def new_connection() -> None:
    """Start on a new connection in the executor thread, whatever an earlier test left there."""
    await sync_to_async(lambda: connection.close())()  # resolved in that thread, not this one


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


async def _terminate_the_workers_connection() -> None:
    """Terminate the connection of the thread every worker's database call runs on, and wait
    until the server has dropped it. The test's own connections are left alone."""
    pid = await sync_to_async(_backend_pid)()
    with psycopg.connect(postgres.database_url(settings.DATABASES["default"]["NAME"]), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        async with asyncio.timeout(10):
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@requires_postgres
async def test_the_status_reporter_writes_again_after_its_connection_was_terminated(new_connection):
    account = await sync_to_async(ProviderAccount.objects.create)(provider="stocktwits", endpoint="http://127.0.0.1:9/")
    reporter = FeedStatusReporter(account.pk, provider="stocktwits")
    await _terminate_the_workers_connection()
    await reporter.set_state("connected")
    assert (await sync_to_async(FeedStatus.objects.get)(account=account)).state == "connected"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@requires_postgres
async def test_the_watchlist_poller_reads_again_after_its_connection_was_terminated(new_connection):
    await sync_to_async(team_with_watchlist)("Alpha", {}, ["AAPL", "MSFT"])
    seen: list[set[str]] = []

    class Feed:
        def set_watched(self, codes) -> None:
            seen.append(set(codes))

    await _terminate_the_workers_connection()
    poller = asyncio.create_task(_follow_watchlists(Feed(), "stocknews", 0.05))
    try:
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.01)
    finally:
        poller.cancel()
    assert seen[0] == {"AAPL", "MSFT"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@requires_postgres
async def test_the_stocktwits_cursor_is_read_again_after_its_connection_was_terminated(new_connection):
    await sync_to_async(StreamCursor.objects.create)(provider="stocktwits", position="4" * 56)
    await _terminate_the_workers_connection()
    assert await sync_to_async(stored_cursor)() == "4" * 56


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_worker_whose_database_stays_out_of_reach_exits_for_a_restart_without_moving_its_cursor(
        monkeypatch):
    """Past its bounded retries the worker exits 1 (systemd restarts it, resuming from the cursor),
    instead of dropping the batch and committing later ones past it."""
    from functools import partial

    from django.db import OperationalError

    from feeds import runner
    from feeds.backoff import Backoff
    from feeds.pipeline import Pipeline

    def unreachable(*, events, fence=None):
        raise OperationalError("connection refused")

    monkeypatch.setattr(runner, "events_store", unreachable)
    monkeypatch.setattr(runner, "Pipeline", partial(Pipeline, store_attempts=3,
                                                    retry_backoff=lambda: Backoff(base=0.01, cap=0.02)))
    async with StockTwitsSimulator([f"{USER}:{PASSWORD}"], interval=None) as sim:
        await sync_to_async(ProviderAccount.objects.create)(provider="stocktwits", endpoint=sim.url(),
                                                            username=USER, password=PASSWORD)
        await sync_to_async(StreamCursor.objects.create)(provider="stocktwits", position="1" * 56)
        stop = asyncio.Event()
        worker = asyncio.create_task(runner.run_feed("stocktwits", stop=stop))
        try:
            await sim.wait_for(lambda: sim.open_streams == 1, timeout=10)
            sim.emit(SYMBOLS)
            assert await asyncio.wait_for(worker, 10) == 1
        finally:
            stop.set()
            await asyncio.wait_for(worker, 10)
    assert await sync_to_async(stored_cursor)() == "1" * 56
    assert (await sync_to_async(FeedStatus.objects.get)()).last_error.startswith("store failed: OperationalError")
