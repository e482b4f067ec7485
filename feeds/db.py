"""Database connection hygiene for long-running feed workers.

Django replaces a broken connection at the start and end of each HTTP request
(`close_old_connections`). A feed worker never ends a request: after a PostgreSQL restart, a
failover or `pg_terminate_backend`, its connection stays dead and every later query fails on it.
So every database call a worker makes goes through `live_connection`, on the thread that owns the
connection (asgiref's thread-sensitive executor, shared by the pipeline, the status reporter and
the watchlist poller).

Why not `close_old_connections()` as is: with the default `CONN_MAX_AGE=0` ("one connection per
request") it would close a healthy connection before every batch, one new PostgreSQL backend per
batch. A worker keeps one connection and replaces it when it broke (or outlived a positive
`CONN_MAX_AGE`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import InterfaceError, OperationalError, connections

__all__ = ["TRANSIENT_ERRORS", "close_broken_connections", "live_connection"]

# The database is unreachable or dropped us (terminated backend, restart, network, deadlock,
# serialization failure): the same work can succeed on a new connection. Other errors (integrity,
# data, programming) come from the work itself and would fail again.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

P = ParamSpec("P")
R = TypeVar("R")


def close_broken_connections() -> None:
    """Close this thread's connections that failed and no longer answer (or are past a positive
    CONN_MAX_AGE); the next query opens a new one."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        max_age = conn.settings_dict["CONN_MAX_AGE"]
        if conn.errors_occurred or (max_age is not None and max_age > 0):
            conn.close_if_unusable_or_obsolete()


def live_connection(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` (a sync database call) on a working connection: a broken one is replaced first,
    and if the connection breaks under the call, it is replaced and the call made once more.

    Only for calls that are safe to repeat: reads, and writes that are one transaction.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        close_broken_connections()
        try:
            return func(*args, **kwargs)
        except TRANSIENT_ERRORS:
            # Once, not in a loop: a database that is really down fails the second call too,
            # and the caller's own policy (backoff, the next poll, an exit) takes over.
            close_broken_connections()
            return func(*args, **kwargs)

    return wrapper
