"""`manage.py deliver_alerts`: send the alert outbox (dashboard/delivery.py) to its destinations.

One asyncio loop: claim due rows (a short transaction on the database thread), send each on its
own task, at most `--concurrency` at a time, record each outcome as it comes. A slow or hanging
receiver costs one slot for at most 10 s and never delays the others. Run as many workers as you
like, on any hosts: SKIP LOCKED hands each row to one of them. SIGTERM (or SIGINT) stops claiming,
lets the sends in flight finish and be recorded (each ends within 10 s), and exits 0; a worker
killed harder leaves its claimed rows to come due again after the claim lease (60 s).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import datetime

import httpx
from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand
from django.db import connections
from django.utils import timezone

from dashboard.delivery import (
    CLAIM_LEASE, Claimed, alert_deliveries_claim, alert_deliveries_sweep, alert_delivery_record,
)
from dashboard.senders import HTTP_TIMEOUT, TOTAL_SECONDS, message_send, outcome_classify
from feeds.db import live_connection

log = logging.getLogger("dashboard.deliver_alerts")


def _db(func):
    # The ORM runs on the one database thread, on a working connection (a restarted PostgreSQL
    # costs a failed turn, not the worker).
    return sync_to_async(live_connection(func), thread_sensitive=True)


class DeliveryWorker:
    def __init__(self, *, concurrency: int = 8, poll_seconds: float = 1.0, sweep_seconds: float = 60.0,
                 clock: Callable[[], datetime] = timezone.now, total_seconds: float = TOTAL_SECONDS,
                 timeout: httpx.Timeout = HTTP_TIMEOUT, lease=CLAIM_LEASE) -> None:
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.sweep_seconds = sweep_seconds
        self.clock = clock  # tests pass one they move: a day of retries without waiting a day
        self.total_seconds = total_seconds
        self.timeout = timeout
        self.lease = lease
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task] = set()
        stopping = asyncio.ensure_future(stop.wait())
        next_sweep = loop.time()
        # follow_redirects off: a webhook answering 3xx is a misconfiguration to see, not to follow.
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            try:
                while not stop.is_set():
                    claimed: list[Claimed] = []
                    try:
                        if self.sweep_seconds and loop.time() >= next_sweep:
                            next_sweep = loop.time() + self.sweep_seconds
                            await _db(alert_deliveries_sweep)(now=self.clock())
                        free = self.concurrency - len(in_flight)
                        claimed = await _db(alert_deliveries_claim)(now=self.clock(), limit=free, lease=self.lease)
                    except Exception:  # the database is away: rows wait in the outbox, we try again
                        log.exception("deliver_alerts: a turn failed; retrying")
                    for item in claimed:
                        task = asyncio.create_task(self._deliver(client, item))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    if claimed and len(in_flight) < self.concurrency:
                        continue  # there may be more due right now
                    await asyncio.wait([stopping, *in_flight], timeout=self.poll_seconds,
                                       return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if in_flight:
                    await asyncio.gather(*in_flight, return_exceptions=True)
                await _db(connections.close_all)()

    async def _deliver(self, client: httpx.AsyncClient, item: Claimed) -> None:
        try:
            result = await message_send(client, kind=item.destination_kind, target=item.target, secrets=item.secrets,
                                        msg_id=item.webhook_id, message=item.message, now=self.clock(),
                                        total_seconds=self.total_seconds)
            outcome = outcome_classify(result)
            state = await _db(alert_delivery_record)(claimed=item, outcome=outcome, now=self.clock(),
                                                     status=result.status)
            self.sent += 1
            log.info("alert delivery %s (attempt %d): %s%s", item.id, item.attempts, state,
                     f" ({outcome.error})" if outcome.error else "")
        except Exception:  # unrecorded: the row stays claimed and comes due again after the lease
            log.exception("alert delivery %s: could not send or record", item.id)


class Command(BaseCommand):
    help = "Send queued alerts to their destinations (Slack, Teams, e-mail, signed webhooks) until SIGTERM."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--concurrency", type=int, default=8, help="Sends in flight at once (default 8).")
        parser.add_argument("--poll", type=float, default=1.0, help="Seconds between looks at the outbox.")

    def handle(self, *args, concurrency: int, poll: float, **options) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await DeliveryWorker(concurrency=max(1, concurrency), poll_seconds=poll).run(stop)

        asyncio.run(main())
