"""One consuming worker per provider account: a lease row in PostgreSQL with a fencing token.

Any number of `runfeed <provider>` processes may run for one account. The one holding the lease
consumes; the others stand by (feeds/runner.py) and take over when it expires.

Why PostgreSQL and a lease row (not Redis, not a session advisory lock):
- The lease guards writes to PostgreSQL, and every store transaction of the holder checks the
  token inside that transaction (`fence`), with a row lock that makes a standby's acquisition
  wait for it. So a worker that lost its lease commits nothing, whatever its clock, a pause or a
  partition say, and everything the old holder committed is visible to the new one before it
  reads the stream cursor. A Redis lease cannot fence a PostgreSQL write, and Redis' asynchronous
  replication can lose a lease key in a Sentinel failover (two holders at once).
- Expiry is the database's clock (`now()`): workers' clocks never matter.
- A session advisory lock lives as long as one connection: through PgBouncer's transaction
  pooling it is unusable, and under a partition the server keeps it until TCP keepalives notice
  (two hours by default), so no standby could take over within 15 s.

Timing, with `ttl` = FEEDS_LEASE_SECONDS (9 s by default):
- The holder renews every ttl/4. It counts the lease as its own until `sent + ttl - margin`,
  where `sent` is when it sent the last renewal that succeeded (monotonic clock). The database
  set `expires_at = now() + ttl` after that moment, so the holder stops consuming before a
  standby can acquire, even when the database is out of its reach.
- A standby tries every FEEDS_LEASE_POLL_SECONDS (1 s). After a SIGKILL it takes over at most
  ttl + poll after the holder's last renewal; after a clean stop (SIGTERM) at once: the lease
  is released.
Lease calls run on a thread and connection of their own, so a store that hangs on a dead
connection cannot delay a renewal, nor a hung renewal the decision to stop. A call that times out
leaves its thread behind (a daemon: it never holds up an exit) and the next call gets a new thread,
hence a new connection: a connection stuck behind a partition is not waited for once it heals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import secrets
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from .db import live_connection
from .models import FeedLease, FeedWorker, WorkerRole

__all__ = ["Lease", "LeaseLost", "worker_identity"]

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """This worker no longer holds the lease: it must stop consuming and store nothing more."""


def worker_identity() -> str:
    """host:pid:nonce — the nonce tells apart a restarted process that reused a pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _in(seconds: float):
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def _acquire(account_id: int, holder: str, ttl: float) -> int | None:
    """Take the lease if it is free, expired or already ours; return the new token."""
    try:
        FeedLease.objects.get_or_create(account_id=account_id)
    except IntegrityError:  # another worker created it at the same moment: fine
        pass
    with transaction.atomic():
        free = Q(expires_at__isnull=True) | Q(expires_at__lte=Now()) | Q(holder=holder)
        taken = (FeedLease.objects.filter(free, account_id=account_id)
                 .update(holder=holder, token=F("token") + 1, acquired_at=Now(), expires_at=_in(ttl)))
        if not taken:
            return None
        # Same transaction: the UPDATE's row lock keeps anyone else from moving the token meanwhile.
        return FeedLease.objects.values_list("token", flat=True).get(account_id=account_id)


def _renew(account_id: int, holder: str, token: int, ttl: float) -> bool:
    return bool(FeedLease.objects.filter(account_id=account_id, holder=holder, token=token)
                .update(expires_at=_in(ttl)))


def _release(account_id: int, holder: str, token: int) -> None:
    FeedLease.objects.filter(account_id=account_id, holder=holder, token=token).update(expires_at=Now())


def _announce(account_id: int, identity: str, role: str, started_at) -> None:
    FeedWorker.objects.update_or_create(
        identity=identity,
        defaults={"account_id": account_id, "role": role, "heartbeat_at": Now()},
        create_defaults={"account_id": account_id, "role": role, "heartbeat_at": Now(), "started_at": started_at},
    )


def _forget(identity: str) -> None:
    FeedWorker.objects.filter(identity=identity).delete()


def fence(account_id: int, token: int) -> None:
    """Inside a store transaction: raise LeaseLost unless `token` still holds an unexpired lease.

    The row lock (FOR NO KEY UPDATE) makes a standby's acquisition, and the holder's own renewal,
    wait until this transaction ends: every batch committed under the lease happens before the
    next holder exists. On PostgreSQL a transaction left idle by a partitioned worker is ended by
    the server after FEEDS_LEASE_SECONDS, so the lock it holds cannot block a takeover for longer.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("fence() must run inside the store's transaction")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                           [f"{int(settings.FEEDS_LEASE_SECONDS * 1000)}ms"])
    held = (FeedLease.objects.select_for_update(no_key=True)
            .filter(account_id=account_id, token=token, expires_at__gt=Now()).values_list("pk", flat=True))
    if not list(held):
        raise LeaseLost(f"lease of account {account_id} with token {token} is no longer held")


class _LeaseThread:
    """One daemon thread running calls in order; its Django connection is its own (per thread)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="lease", daemon=True).start()

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, future, func = item
            try:
                result = func()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
        connections.close_all()

    def submit(self, func) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.put((loop, future, func))
        return future

    def retire(self) -> None:
        """Close the connection and end, after whatever is queued (at once if nothing hangs)."""
        self._calls.put(None)


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.done():  # the caller gave up waiting
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Lease:
    """A worker's view of the lease for one provider account (see the module docstring)."""

    def __init__(self, account_id: int, *, identity: str | None = None, ttl: float = 9.0, poll: float = 1.0,
                 clock=time.monotonic) -> None:
        self.account_id = account_id
        self.identity = identity or worker_identity()
        self.ttl = ttl
        self.poll = poll
        self.renew_every = ttl / 4
        self.margin = ttl / 4  # never count on the last quarter: a renewal may be in flight
        self.token: int | None = None
        self._deadline = 0.0
        self._clock = clock
        self._started_at = None
        self._thread = _LeaseThread()

    async def _call(self, func, *args, timeout: float | None = None):
        try:
            return await asyncio.wait_for(self._thread.submit(functools.partial(live_connection(func), *args)), timeout)
        except TimeoutError:
            self._thread.retire()
            self._thread = _LeaseThread()
            raise

    def held(self) -> bool:
        return self.token is not None and self._clock() < self._deadline

    def fence(self) -> None:
        """For the store (called in its transaction): raises LeaseLost when not held."""
        if self.token is None:
            raise LeaseLost("no lease")
        fence(self.account_id, self.token)

    async def announce(self, role: str) -> None:
        """Say this worker is alive and in `role` (for the health page); best effort."""
        from django.utils import timezone

        self._started_at = self._started_at or timezone.now()
        try:
            await self._call(_announce, self.account_id, self.identity, role, self._started_at, timeout=self.ttl)
        except Exception as exc:  # the health page shows it late; consuming must not depend on it
            log.warning("could not announce worker %s as %s: %s", self.identity, role, exc)

    async def try_acquire(self) -> bool:
        sent = self._clock()
        try:
            token = await self._call(_acquire, self.account_id, self.identity, self.ttl, timeout=self.poll + 2)
        except Exception as exc:
            log.warning("lease of account %s: could not try to acquire: %s", self.account_id, exc)
            return False
        if token is None:
            return False
        self.token, self._deadline = token, sent + self.ttl - self.margin
        log.info("lease of account %s acquired by %s (token %s)", self.account_id, self.identity, token)
        await self.announce(WorkerRole.HOLDER)
        return True

    async def wait_acquired(self, stop: asyncio.Event) -> bool:
        """Stand by until the lease is ours (True) or `stop` is set (False)."""
        await self.announce(WorkerRole.STANDBY)
        last_announce = self._clock()
        while not stop.is_set():
            if await self.try_acquire():
                return True
            if self._clock() - last_announce >= self.renew_every:
                await self.announce(WorkerRole.STANDBY)
                last_announce = self._clock()
            try:
                await asyncio.wait_for(stop.wait(), self.poll)
            except TimeoutError:
                pass
        return False

    async def keep(self) -> None:
        """Renew until the lease can no longer be counted on; then return (the caller stops
        consuming). Never returns while the lease is safely held."""
        while True:
            await asyncio.sleep(max(0.0, min(self.renew_every, self._deadline - self._clock())))
            if not self.held():
                break
            sent = self._clock()
            try:
                renewed = await self._call(_renew, self.account_id, self.identity, self.token, self.ttl,
                                           timeout=max(0.01, self._deadline - sent))
            except Exception as exc:  # unreachable, hung or failing: keep trying until the deadline
                log.warning("lease of account %s: renewal failed (%s: %s); %.1fs left", self.account_id,
                            type(exc).__name__, exc, self._deadline - self._clock())
                continue
            if not renewed:
                log.error("lease of account %s: taken over by another worker", self.account_id)
                break
            self._deadline = sent + self.ttl - self.margin
            await self.announce(WorkerRole.HOLDER)
        log.error("lease of account %s lost by %s (token %s): stopping consumption", self.account_id,
                  self.identity, self.token)
        self.token = None

    async def release(self) -> None:
        """Give the lease up (a clean stop): a standby takes over at its next try."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            await self._call(_release, self.account_id, self.identity, token, timeout=3)
            log.info("lease of account %s released by %s", self.account_id, self.identity)
        except Exception as exc:  # it expires by itself
            log.warning("could not release the lease of account %s: %s", self.account_id, exc)

    async def close(self) -> None:
        """Leave: forget this worker's presence and close the lease thread's connection."""
        try:
            await self._call(_forget, self.identity, timeout=3)
        except Exception as exc:
            log.warning("could not remove worker %s from the list: %s", self.identity, exc)
        self._thread.retire()
