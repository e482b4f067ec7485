"""Real concurrency on PostgreSQL: threads with their own database connections, started together,
and a lock held by the test so that they are provably inside the critical section at once.

    with LockGate("LOCK TABLE feeds_webhookdelivery IN SHARE MODE") as gate:
        running = start_together(call, call, call)
        gate.wait_for_waiters(3, running)        # every thread is now blocked on our lock
    results = running.results()                 # the gate opened: they race for real

A barrier alone leaves the overlap to the scheduler (on 2 cores, often none); the gate makes the
interleaving SQLite cannot have (writers queued at BEGIN) happen on every run.
Tests use `@requires_postgres` with `@pytest.mark.django_db(transaction=True)`: each thread commits
for real, which a test wrapped in one transaction could not show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections

requires_postgres = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="needs PostgreSQL: SQLite serialises writers, so these races cannot happen there",
)


class Running:
    def __init__(self, threads: list[threading.Thread], outcomes: list):
        self._threads, self._outcomes = threads, outcomes

    def failed(self) -> list[BaseException]:
        return [outcome for outcome in self._outcomes if isinstance(outcome, BaseException)]

    def results(self, timeout: float = 30) -> list:
        """Every call's return value, in call order; re-raises the first exception a call raised."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            raise TimeoutError(f"concurrent calls still running after {timeout}s")
        if self.failed():
            raise self.failed()[0]
        return list(self._outcomes)


def start_together(*calls: Callable[[], object]) -> Running:
    """Run each call in its own thread (so on its own database connection), released together."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[index] = call()
        except BaseException as exc:  # handed to the test thread by Running.results()
            outcomes[index] = exc
        finally:
            connections.close_all()  # the test client does not close them; the test database must drop

    threads = [threading.Thread(target=run, args=(i, call), daemon=True, name=f"concurrent-{i}")
               for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    return Running(threads, outcomes)


def _connect(**kwargs) -> psycopg.Connection:
    params = connection.settings_dict
    return psycopg.connect(dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"],
                           host=params["HOST"], port=params["PORT"] or None, connect_timeout=10, **kwargs)


class LockGate:
    """Holds a lock on its own connection (one SQL statement, in a transaction) until the block ends."""

    def __init__(self, lock_sql: str, *params):
        self.lock_sql, self.params = lock_sql, params

    def __enter__(self) -> LockGate:
        self._holder = _connect()
        self._holder.execute(self.lock_sql, self.params)  # psycopg opened a transaction: the lock is held
        self._observer = _connect(autocommit=True)
        return self

    def waiters(self) -> int:
        """Sessions of this database waiting for a lock right now."""
        return self._observer.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock'").fetchone()[0]

    def wait_for_waiters(self, count: int, running: Running, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.waiters() < count:
            if running.failed():
                raise running.failed()[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.waiters()} of {count} sessions reached the lock in {timeout}s")
            time.sleep(0.01)  # polling interval, not synchronisation: the condition is checked each time

    def __exit__(self, *exc_info) -> None:
        try:
            self._holder.commit()  # the gate opens
        finally:
            self._holder.close()
            self._observer.close()
