"""Probes for a load balancer or orchestrator: `/healthz` (the process answers) and `/readyz`
(it can do its work: the database and the channel layer each answer within
READYZ_TIMEOUT_SECONDS, 1 s by default; else 503).

They are answered by a middleware that runs before all the others, on purpose:
- a probe comes over plain HTTP from the balancer behind TLS termination, without the
  forwarded-proto header: SecurityMiddleware's SECURE_SSL_REDIRECT would answer 301, which most
  balancers count as a failure (SECURE_REDIRECT_EXEMPT would fix only this one);
- it names the backend by address (`Host: 10.0.0.5:8000`), which ALLOWED_HOSTS rightly does not
  list: CommonMiddleware would answer 400;
- it has no session, so nothing may send it to the login page.
Skipping those checks is safe here: the answers build no URL from the Host header and hold no
secret (each check's result and the exception's type; hostnames, URLs and messages go only to
the log, where feeds/logging.py masks secrets).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from feeds.hub import live_backend
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse

__all__ = ["HealthProbeMiddleware", "readiness"]

log = logging.getLogger(__name__)

# One thread for database checks: a database that hangs (not refusing, just silent) holds that
# thread until the driver gives up, and later probes share its pending check instead of piling
# up threads behind it.
_db_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz-db")
_db_lock = threading.Lock()
_db_pending: Future | None = None


def _database_ping() -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # A fresh connection per probe: readiness includes "new connections can be made", and a
        # connection kept in this thread would outlive a database restart as a broken one.
        connection.close()


def _database_check_future() -> Future:
    global _db_pending
    with _db_lock:
        if _db_pending is None or _db_pending.done():
            _db_pending = _db_executor.submit(_database_ping)
        return _db_pending


async def _check_database() -> None:
    check = asyncio.wrap_future(_database_check_future())
    # A probe that timed out stops waiting but the check finishes later: read its outcome, or
    # asyncio logs a late failure as "Future exception was never retrieved".
    check.add_done_callback(lambda done: done.cancelled() or done.exception())
    # shield: a timed-out probe must not cancel the check other probes are waiting on.
    await asyncio.shield(check)


async def _check_channel_layer() -> None:
    """The live backend (Redis) answers: what publishing and the hub's subscription need."""
    await live_backend().ping()


CHECKS = {"database": _check_database, "channel_layer": _check_channel_layer}


async def _run(name: str, check, timeout: float) -> dict:
    started = time.monotonic()
    try:
        await asyncio.wait_for(check(), timeout)
        result = {"status": "ok"}
    except TimeoutError:
        log.warning("readyz: %s did not answer within %.1fs", name, timeout)
        result = {"status": "timeout"}
    except Exception as exc:
        log.warning("readyz: %s failed: %s: %s", name, type(exc).__name__, exc)
        result = {"status": "error", "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000)
    return result


async def readiness(*, timeout: float | None = None) -> tuple[bool, dict]:
    """Run every check at once, each bounded by `timeout`. Returns (ready, results by name)."""
    timeout = settings.READYZ_TIMEOUT_SECONDS if timeout is None else timeout
    results = await asyncio.gather(*(_run(name, check, timeout) for name, check in CHECKS.items()))
    checks = dict(zip(CHECKS, results))
    return all(r["status"] == "ok" for r in checks.values()), checks


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


class HealthProbeMiddleware:
    """Answers GET/HEAD /healthz and /readyz; passes every other request on untouched."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path not in ("/healthz", "/readyz") or request.method not in ("GET", "HEAD"):
            return await self.get_response(request)
        if path == "/healthz":  # alive: the event loop answers; touches nothing else
            return _no_store(HttpResponse("ok\n", content_type="text/plain"))
        ready, checks = await readiness()
        body = json.dumps({"status": "ready" if ready else "not_ready", "checks": checks})
        return _no_store(HttpResponse(body, status=200 if ready else 503, content_type="application/json"))

