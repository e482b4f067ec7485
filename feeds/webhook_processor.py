"""Webhook deliveries are processed after the response, in the process that received them, and
retried from their stored rows.

The stored row is the source of truth: `webhook_delivery_process` claims it (exactly once), so
anything held here in memory may be lost (a crash, a restart, SIGTERM mid-processing) without
losing a delivery; the row stays pending, and the next sweep (this process's or another's) or
`manage.py process_webhooks` picks it up.

Why one thread per process rather than an asyncio task on the server's loop: Django runs the sync
view on its one sync thread under Daphne, and on a short-lived loop under `async_to_sync` and the
test client, where a task created by the view is cancelled when the call returns. Processing is
blocking ORM work that would leave the loop for a thread anyway. A daemon thread fed by a queue
never delays the response nor blocks the event loop or the sync thread; `processor` below holds
the strong reference to it for the life of the process. Each process also sweeps every
`retry_after` seconds for its own failures and for rows another process left pending.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone

from .services import webhook_deliveries_due, webhook_delivery_process

__all__ = ["WebhookProcessor", "processor"]

log = logging.getLogger(__name__)


class WebhookProcessor:
    def __init__(self, *, retry_after: float = 60.0, give_up_after: float = 24 * 3600.0,
                 process: Callable[..., str | None] = webhook_delivery_process) -> None:
        self.retry_after = retry_after  # seconds; read on every turn, so it may change while running
        self.give_up_after = give_up_after
        self._process = process
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, delivery_id: int) -> None:
        """Process this stored delivery soon, on the processor's thread. Returns at once."""
        self._queue.put(delivery_id)
        with self._lock:  # started on first use: a process that never receives a webhook has no thread
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-processor", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                delivery_id = self._queue.get(timeout=max(0.0, last_sweep + self.retry_after - time.monotonic()))
            except queue.Empty:
                delivery_id = None
            # As Django does around a request: a connection broken meanwhile (a PostgreSQL restart)
            # or past CONN_MAX_AGE is replaced, not reused.
            close_old_connections()
            try:
                if delivery_id is not None:
                    self._process(delivery_id=delivery_id)
                if time.monotonic() - last_sweep >= self.retry_after:
                    last_sweep = time.monotonic()
                    self.sweep()
            except Exception:  # e.g. the database is down: the rows wait, pending, for the next turn
                log.exception("webhook processor: a turn failed; pending deliveries are retried later")
            finally:
                close_old_connections()

    def sweep(self) -> int:
        """Process every delivery due for a retry (see `webhook_deliveries_due`); returns how many."""
        due = webhook_deliveries_due(now=timezone.now(), retry_after=timedelta(seconds=self.retry_after),
                                     give_up_after=timedelta(seconds=self.give_up_after))
        for delivery_id in due:
            self._process(delivery_id=delivery_id)
        return len(due)


processor = WebhookProcessor()
