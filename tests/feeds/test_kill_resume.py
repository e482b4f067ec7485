"""No gap, no duplicate, whatever the kill: a real `manage.py runfeed stocktwits` process catching
up a backlog of messages that each name several symbols is SIGKILLed inside the backlog, several
times, and restarted; in the end the stored rows are exactly the provider's sequence.

Why it can fail: the pipeline stores batches of up to 2000 events and a message naming 7 symbols
is 7 events, so a full batch ends inside a message unless the events before it are a multiple of
7. If such a batch commits the message's cursor (seq_id) with only some of its rows, a kill
before the next batch loses the rest: the restart resumes after that message. The worker runs
on a database of its own (tests/postgres.py), in the environment production gives it, against
the StockTwits simulator on loopback, which replays the backlog after the seq_id it is given, as
the real Firehose does.
"""

from __future__ import annotations

import signal

from feeds.simulators.stocktwits import StockTwitsSimulator
from tests.concurrency import requires_postgres
from tests.e2e.conftest import wait_until
from tests.postgres import fresh_database
from tests.simthread import simulator_thread
from tests.workerprocess import Sql, WorkerProcess

USER, PASSWORD = "firehose-kill", "kill-pass-0042"
# Big enough that the worker (~10k rows/s, bench/ingest.py) is still inside the backlog when a kill
# lands: between the row count that triggers a kill and the kill itself, a smaller backlog was
# sometimes stored to the end, and the kill then tested nothing.
MESSAGES = 6000
SYMBOLS = 7  # 2000 is not a multiple of 7: most full batches would end inside a message
KILL_AT = (0.15, 0.45, 0.75)  # fractions of the backlog's rows stored when the worker is killed

pytestmark = requires_postgres


def test_sigkill_inside_a_multi_symbol_backlog_loses_nothing_and_stores_nothing_twice(tmp_path):
    simulator = StockTwitsSimulator([f"{USER}:{PASSWORD}"], interval=None, keepalive_interval=60, seed=11)
    with fresh_database("twkill") as url, simulator_thread(simulator) as sim:
        workers = WorkerProcess(url, log=tmp_path / "worker.log")
        workers.manage("migrate", "--noinput")
        workers.manage("provider", "set", "stocktwits", "--endpoint", simulator.url(), "--username", USER,
                       "--password", PASSWORD, "--enable")
        # The worker last stored `anchor`; what came after it waits in the provider's buffer.
        anchor = sim.call(simulator.emit)
        backlog = sim.call(simulator.backlog, MESSAGES, symbols_per_message=SYMBOLS)
        expected = {(str(m["message_id"]), s["symbol"]) for m in backlog for s in m["symbols"]}
        assert len(expected) == MESSAGES * SYMBOLS
        db = Sql(url)
        db.conn.execute("INSERT INTO feeds_streamcursor (provider, position, updated_at) "
                        "VALUES ('stocktwits', %s, now())", (anchor["seq_id"],))

        def rows() -> int:
            return db.value("SELECT count(*) FROM feeds_crowdmention")

        worker = workers.start("stocktwits")
        try:
            killed_at = []
            for fraction in KILL_AT:
                target = int(fraction * len(expected))
                wait_until(lambda: rows() >= target or worker.poll() is not None, timeout=60,
                           what=f"{target} rows stored")
                assert worker.poll() is None, f"the worker exited:\n{workers.log_text()}"
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                killed_at.append(rows())
                assert killed_at[-1] < len(expected), "killed after the backlog was stored: nothing was tested"
                worker = workers.start("stocktwits")
            assert killed_at == sorted(killed_at) and killed_at[0] > 0
            wait_until(lambda: db.value("SELECT position FROM feeds_streamcursor WHERE provider = 'stocktwits'")
                       == backlog[-1]["seq_id"], timeout=60, what="the worker to catch up")
            stored = dict(((m, s), n) for m, s, n in db.rows(
                "SELECT message_id, symbol, count(*) FROM feeds_crowdmention GROUP BY message_id, symbol"))
            missing, unsent = expected - stored.keys(), stored.keys() - expected
            assert not missing, f"{len(missing)} (message, symbol) rows lost to the kills at {killed_at} rows, " \
                                f"e.g. {sorted(missing)[:4]}"
            assert not unsent, f"stored but never sent: {sorted(unsent)[:4]}"
            assert {key: n for key, n in stored.items() if n != 1} == {}, "stored more than once"
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(15) == 0, workers.log_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            db.close()
