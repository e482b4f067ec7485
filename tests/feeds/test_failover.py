"""Highly available feed workers, as production runs them: several `manage.py runfeed` processes for
one account on PostgreSQL and Redis, against the simulators on loopback. The holder of the lease is
SIGKILLed while data flows; a standby takes over within 15 s (with the default lease time), and in
the end every item the provider sent is stored once and broadcast once.

- StockNews has no resume: the standby keeps its own connection and hands over what it held
  (feeds/standby.py); what the dead holder had already stored is neither stored nor sent again.
- StockTwits resumes from the cursor stored with its data: the standby connects when it takes over,
  and resumes exactly where the dead holder's last commit ended, even inside a multi-symbol backlog.
  Why that can fail: the pipeline stores batches of up to 2000 events and a message naming 7 symbols
  is 7 events, so a full batch ends inside a message unless the events before it are a multiple of
  7. If such a batch committed the message's cursor (seq_id) with only some of its rows, a kill
  before the next batch would lose the rest: the next holder resumes after that message.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from django.conf import settings

from feeds.groups import instrument_group
from feeds.simulators.stocknews import StockNewsSimulator
from feeds.simulators.stocktwits import StockTwitsSimulator
from tests.concurrency import requires_postgres
from tests.e2e.conftest import wait_until
from tests.live import listening_in_thread
from tests.postgres import fresh_database
from tests.simthread import simulator_thread
from tests.workerprocess import Sql, WorkerProcess

pytestmark = [requires_postgres, pytest.mark.stack]  # runfeed processes, as production runs them

TOKEN = "failover-token-0001"
TAKEOVER_SECONDS = 15  # the bound, with the default FEEDS_LEASE_SECONDS (9) and poll (1)


def _workers(url: str, tmp_path, name: str) -> WorkerProcess:
    # The test's live prefix: this process listens to what the workers publish.
    return WorkerProcess(url, log=tmp_path / f"{name}.log", CHANNEL_LAYER_PREFIX=settings.LIVE_PREFIX,
                         FEEDS_WATCH_POLL_SECONDS="0.2")


def _holder_pid(db: Sql) -> int | None:
    holder = db.value("SELECT holder FROM feeds_feedlease WHERE expires_at > now()")
    return int(holder.split(":")[1]) if holder else None


def _stop(*procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except Exception:
            proc.kill()
            proc.wait(5)


class _Emitter(threading.Thread):
    """News for AAPL every `every` seconds until stopped; remembers every slug it sent."""

    def __init__(self, sim, simulator, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.sim, self.simulator, self.every = sim, simulator, every
        self.sent: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.sent.append(self.sim.call(self.simulator.emit_news, "AAPL")["data"]["articleSlug"])


def test_sigkill_the_stocknews_holder_the_hot_standby_takes_over_nothing_lost_stored_or_sent_twice(tmp_path):
    simulator = StockNewsSimulator([TOKEN], news_interval=None)
    with fresh_database("twfailnews", migrated=True) as url, simulator_thread(simulator) as sim:
        workers = _workers(url, tmp_path, "news")
        aapl = int(workers.manage("shell", "-c", (  # one process, not three: each start costs seconds
            "from feeds.models import ProviderAccount; from tests.factories import team_with_watchlist, user; "
            f"ProviderAccount.objects.create(provider='stocknews', endpoint='ws://127.0.0.1:{simulator.port}/ws', "
            f"token='{TOKEN}'); "
            "w = team_with_watchlist('Desk', {user('ana'): 'owner'}, ['AAPL']); "
            "i = w.items.get().instrument; i.stocknews_ticker = 'AAPL'; i.save(); print(i.id)")).split()[-1])
        db = Sql(url)
        first = workers.start("stocknews")
        second = None
        try:
            with listening_in_thread(instrument_group(aapl), timeout=60) as inbox:
                wait_until(lambda: _holder_pid(db) == first.pid, timeout=20, what="the first worker to hold the lease")
                second = workers.start("stocknews")
                wait_until(lambda: db.value("SELECT count(*) FROM feeds_feedworker WHERE role = 'standby'") == 1,
                           timeout=20, what="the second worker to stand by")
                wait_until(lambda: simulator.open_connections == 2 and sum(
                    1 for _, m in simulator.received if isinstance(m, dict) and m.get("type") == "subscribe"
                    and "AAPL" in m.get("tickers", [])) >= 2, timeout=20, what="both workers subscribed to AAPL")

                emitter = _Emitter(sim, simulator)
                emitter.start()
                wait_until(lambda: db.value("SELECT count(*) FROM feeds_newsitem") >= 25, timeout=20,
                           what="the holder to store news")
                first.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                wait_until(lambda: _holder_pid(db) == second.pid, timeout=TAKEOVER_SECONDS + 5,
                           what="the standby to take the lease over")
                took_over = time.monotonic() - killed
                stored_at_takeover = db.value("SELECT count(*) FROM feeds_newsitem")
                wait_until(lambda: db.value("SELECT count(*) FROM feeds_newsitem") >= stored_at_takeover + 25,
                           timeout=20, what="the new holder to store live news")
                emitter.halt.set()
                emitter.join(10)
                sent = emitter.sent
                wait_until(lambda: db.value("SELECT count(*) FROM feeds_newsitem") >= len(sent), timeout=20,
                           what=f"all {len(sent)} news stored")
                assert db.value("SELECT DISTINCT instrument_id FROM feeds_newsitem") == aapl
                received = _news_ids(inbox, len(sent))
                late = _news_ids(inbox, 1, quiet=1.0)  # none more: duplicates would come now
                assert late == [], f"news broadcast again: {late}"
            assert took_over <= TAKEOVER_SECONDS, f"takeover took {took_over:.1f}s"
            stored = dict(db.rows("SELECT external_id, count(*) FROM feeds_newsitem GROUP BY external_id"))
            assert set(stored) == set(sent), f"lost: {sorted(set(sent) - set(stored))[:5]}"
            assert set(stored.values()) == {1}
            assert sorted(received) == sorted(sent), "each news item is broadcast exactly once"
            assert second.poll() is None, workers.log_text()
        finally:
            _stop(first, *([second] if second else []))
            db.close()


def _news_ids(inbox, count: int, *, quiet: float | None = None) -> list[str]:
    """The external ids of the next `count` news events (other kinds, e.g. quotes, skipped). With
    `quiet`, fewer are returned once no frame came for that long."""
    ids: list[str] = []
    others: list[str] = []
    deadline = time.monotonic() + 30
    while len(ids) < count:
        remaining = deadline - time.monotonic()
        try:
            frame = inbox.next(timeout=quiet or max(0.1, remaining))
        except TimeoutError:
            if quiet:
                return ids
            raise AssertionError(f"{len(ids)} of {count} news events received; also {others[:5]}") from None
        event = frame.get("event", {})
        if event.get("kind") == "news":
            ids.append(event["external_id"])
        else:
            others.append(frame.get("type"))
    return ids


USER, PASSWORD = "firehose-failover", "failover-pass-0042"
MESSAGES, SYMBOLS = 6000, 7


def test_sigkill_the_stocktwits_holder_inside_a_backlog_the_standby_resumes_from_the_stored_cursor(tmp_path):
    simulator = StockTwitsSimulator([f"{USER}:{PASSWORD}"], interval=None, keepalive_interval=60, seed=12)
    with fresh_database("twfailtwits", migrated=True) as url, simulator_thread(simulator) as sim:
        workers = _workers(url, tmp_path, "twits")
        workers.manage("provider", "set", "stocktwits", "--endpoint", simulator.url(), "--username", USER,
                       "--password", PASSWORD, "--enable")
        anchor = sim.call(simulator.emit)
        backlog = sim.call(simulator.backlog, MESSAGES, symbols_per_message=SYMBOLS)
        expected = {(str(m["message_id"]), s["symbol"]) for m in backlog for s in m["symbols"]}
        db = Sql(url)
        db.conn.execute("INSERT INTO feeds_streamcursor (provider, position, updated_at) "
                        "VALUES ('stocktwits', %s, now())", (anchor["seq_id"],))

        def rows() -> int:
            return db.value("SELECT count(*) FROM feeds_crowdmention")

        procs = [workers.start("stocktwits"), workers.start("stocktwits")]
        try:
            takeovers, killed_at = [], []
            for fraction in (0.25, 0.6):
                wait_until(lambda: _holder_pid(db) in {p.pid for p in procs}, timeout=20, what="a holder")
                holder = next(p for p in procs if p.pid == _holder_pid(db))
                target = int(fraction * len(expected))
                wait_until(lambda: rows() >= target, timeout=60, what=f"{target} rows stored")
                holder.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                holder.wait(10)
                killed_at.append(rows())
                assert killed_at[-1] < len(expected), "killed after the backlog was stored: nothing was tested"
                standby = next(p for p in procs if p is not holder)
                wait_until(lambda: _holder_pid(db) == standby.pid, timeout=TAKEOVER_SECONDS + 5,
                           what="the standby to take over")
                takeovers.append(time.monotonic() - killed)
                procs = [standby, workers.start("stocktwits")]  # a new standby, as a supervisor would restart one
            wait_until(lambda: db.value("SELECT position FROM feeds_streamcursor WHERE provider = 'stocktwits'")
                       == backlog[-1]["seq_id"], timeout=60, what="the holder to catch up")
            stored = dict(((m, s), n) for m, s, n in db.rows(
                "SELECT message_id, symbol, count(*) FROM feeds_crowdmention GROUP BY message_id, symbol"))
            assert not expected - stored.keys(), f"rows lost to the kills at {killed_at}"
            assert not stored.keys() - expected
            assert {key: n for key, n in stored.items() if n != 1} == {}, "stored more than once"
            assert max(takeovers) <= TAKEOVER_SECONDS, f"takeovers took {takeovers} s"
            assert simulator.open_streams == 1, "only the holder consumes; a StockTwits standby holds no stream"
        finally:
            _stop(*procs)
            db.close()


def test_a_holder_cut_off_from_postgresql_stops_consuming_before_the_standby_takes_over(tmp_path):
    """A network partition between the holder and PostgreSQL (a blackhole: nothing answers, nothing
    is refused). The holder cannot renew: it stops consuming at its own deadline, which falls
    before the database's expiry, so before the standby can acquire. Nothing is lost or doubled:
    the standby resumes from the cursor the holder last committed."""
    from tests.faultproxy import FaultProxy

    simulator = StockTwitsSimulator([f"{USER}:{PASSWORD}"], interval=None, keepalive_interval=60, seed=13)
    with fresh_database("twfailpart", migrated=True) as url, simulator_thread(simulator) as sim:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with simulator_thread(FaultProxy(port)) as pg:
            proxy = pg.simulator
            fast = {"FEEDS_LEASE_SECONDS": "3"}  # the order of events is the point here, not the 15 s
            direct = _workers(url, tmp_path, "direct")
            direct.env.update(fast)
            cut_off = _workers(url.replace(f":{port}/", f":{proxy.port}/"), tmp_path, "cut")
            cut_off.env.update(fast)
            direct.manage("provider", "set", "stocktwits", "--endpoint", simulator.url(), "--username", USER,
                          "--password", PASSWORD, "--enable")
            db = Sql(url)
            first = cut_off.start("stocktwits")
            second = None
            emitted: list[str] = []
            try:
                wait_until(lambda: _holder_pid(db) == first.pid, timeout=20, what="the first worker to hold")
                second = direct.start("stocktwits")
                wait_until(lambda: db.value("SELECT count(*) FROM feeds_feedworker WHERE role = 'standby'") == 1,
                           timeout=20, what="the second worker to stand by")
                for _ in range(20):
                    emitted.append(sim.call(simulator.emit)["seq_id"])
                wait_until(lambda: db.value("SELECT count(DISTINCT seq_id) FROM feeds_crowdmention") == 20,
                           timeout=20, what="the holder to store what was sent")
                assert simulator.open_streams == 1
                sim.call(lambda: setattr(proxy, "blackhole", True))  # the partition
                stopped = None
                for _ in range(400):  # while cut off, the provider keeps sending
                    emitted.append(sim.call(simulator.emit)["seq_id"])
                    if stopped is None and simulator.open_streams == 0:
                        stopped = time.time()
                    if _holder_pid(db) == second.pid:
                        break
                    time.sleep(0.02)  # the provider's pace, not synchronisation
                assert stopped is not None, "the standby took over while the cut-off holder still consumed"
                acquired_at = db.value("SELECT extract(epoch FROM acquired_at) FROM feeds_feedlease")
                assert stopped < float(acquired_at), "the cut-off holder stopped only after the standby started"
                wait_until(lambda: db.value("SELECT count(DISTINCT seq_id) FROM feeds_crowdmention") == len(emitted),
                           timeout=30, what="the new holder to store everything sent")
                stored = db.rows("SELECT seq_id, count(*) FROM feeds_crowdmention GROUP BY message_id, symbol, seq_id")
                assert {seq for seq, _ in stored} == set(emitted) and {n for _, n in stored} == {1}
                sim.call(lambda: setattr(proxy, "blackhole", False))  # the partition heals
                wait_until(lambda: db.value(
                    "SELECT role FROM feeds_feedworker WHERE identity LIKE %s AND heartbeat_at > now() - interval '2 s'",
                    f"%:{first.pid}:%") == "standby", timeout=30, what="the healed worker to stand by")
                assert simulator.open_streams == 1
            finally:
                _stop(first, *([second] if second else []))
                db.close()
