"""Every Redis client of a Tickerwire process is built here, from one `RedisTarget`.

A target is either one Redis at a URL (`REDIS_URL`) or the primary of a Redis Sentinel group
(`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`): the live store's publishers and readers, the hub's
pub/sub connection, the readiness probe (through the live store) and Channels' own layer all take
their clients from the same target, so no process can talk to another Redis than its neighbours.

Through Sentinel, a client asks the sentinels where the primary is whenever it opens a connection
(redis-py's SentinelConnectionPool): after a failover the old primary's connections fail, and the
next connection goes to the new primary. A client connected to a primary that was demoted gets
READONLY on its next write, which redis-py turns into a reconnect. Nothing here retries on its own:
callers keep their bounds (feeds/broadcast.py) and their reaction to a lost subscription
(feeds/hub.py).

Replication is asynchronous, so a new primary may lack the last entries the old one acknowledged;
feeds/livestore.py notices that a stream's position was written by another server and starts a
new epoch (browsers resync from their snapshot).

Passwords never appear in a target's repr or str (both are logged).
"""

from __future__ import annotations

import asyncio
import types
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

__all__ = ["PerLoop", "RedisTarget", "parse_sentinels", "redis_target", "settings_redis_target", "SENTINEL_TIMEOUT"]

# A sentinel answers from memory in well under a millisecond; one silent for this long is treated
# as down and the next is asked, so a dead or black-holed sentinel costs a discovery this much.
SENTINEL_TIMEOUT = 1.0


def parse_sentinels(entries) -> tuple[tuple[str, int], ...]:
    """`["10.0.0.1:26379", "[::1]:26380"]` -> `(("10.0.0.1", 26379), ("::1", 26380))`; ValueError
    names the first entry that is not host:port."""
    out = []
    for entry in entries:
        host, _, port = entry.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS entry {entry!r} is not host:port")
        out.append((host, int(port)))
    return tuple(out)


class _SentinelPrimary(redis.asyncio.Redis):
    """A primary's client that also closes the sentinel clients it discovers through: both hold
    connections bound to the loop that made them (PerLoop closes a client with its loop)."""

    _sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self._sentinel is not None:
                await self._sentinel.aclose()


@dataclass(frozen=True, repr=False)
class RedisTarget:
    """Where this deployment's Redis is. Hashable: feeds/hub.py keys its live backend on it."""

    url: str = ""  # may hold a password: shown through __str__ only
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    password: str = ""  # the primary's and replicas' (Sentinel mode)
    sentinel_password: str = ""

    def __repr__(self) -> str:
        return f"RedisTarget({self})"

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def __str__(self) -> str:
        if self.uses_sentinel:
            return f"sentinel master {self.master!r} via " + ",".join(f"{h}:{p}" for h, p in self.sentinels)
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    def client(self, **options) -> redis.asyncio.Redis:
        """An asyncio client of the primary, with redis-py connection `options` (REDIS_CONNECTION
        and the caller's timeouts). It belongs to the running loop's connections: one per loop."""
        if not self.uses_sentinel:
            return redis.asyncio.Redis.from_url(self.url, **options)
        sentinel = Sentinel(self.sentinels, sentinel_kwargs=self._sentinel_kwargs())
        client = sentinel.master_for(self.master, redis_class=_SentinelPrimary, **self._primary_options(options))
        client._sentinel = sentinel
        return client

    def channel_layer_host(self, options: dict) -> dict:
        """One entry of channels-redis' `hosts` (channels_redis.utils.create_pool reads both shapes)."""
        if not self.uses_sentinel:
            return {"address": self.url, **options}
        return {"master_name": self.master, "sentinels": [list(s) for s in self.sentinels],
                "sentinel_kwargs": self._sentinel_kwargs(), **self._primary_options(options)}

    def _primary_options(self, options: dict) -> dict:
        return {**options, **({"password": self.password} if self.password else {})}

    def _sentinel_kwargs(self) -> dict:
        # Explicit, so redis-py does not copy the primary's socket options (a subscriber's
        # socket_timeout=None would let a silent sentinel hold a discovery forever) and does not
        # retry a dead sentinel with its default backoff: discovery moves on to the next one.
        return {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),
                **({"password": self.sentinel_password} if self.sentinel_password else {})}


class PerLoop:
    """One asyncio Redis client per event loop (a client's connections belong to the loop that made
    them). A loop that closes closes its client first, as channels-redis does for its pools, so
    short-lived loops (`async_to_sync`) leave no connection behind."""

    def __init__(self, make) -> None:
        self._make = make
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._make()
            original_close = loop.close

            def close(this, *args, **kwargs):
                gone = self._clients.pop(this, None)
                if gone is not None and not this.is_running():
                    this.run_until_complete(gone.aclose())
                this.close = original_close
                return original_close(*args, **kwargs)

            loop.close = types.MethodType(close, loop)
        return client


def redis_target(*, url: str = "", sentinels=(), master: str = "", password: str = "",
                 sentinel_password: str = "") -> RedisTarget | None:
    """The target these settings name, None for none (the live path then stays in this process'
    memory: the embedded default). A URL and sentinels together are refused: a process would
    silently use one while its neighbours, configured a little differently, used the other."""
    if url and sentinels:
        raise ValueError("set REDIS_URL or REDIS_SENTINELS, not both")
    if sentinels:
        return RedisTarget(sentinels=parse_sentinels(sentinels), master=master or "mymaster", password=password,
                           sentinel_password=sentinel_password)
    return RedisTarget(url=url) if url else None


def settings_redis_target(settings) -> RedisTarget | None:
    """redis_target() of Django's settings, read now (tests change them at run time)."""
    return redis_target(url=getattr(settings, "REDIS_URL", ""), sentinels=getattr(settings, "REDIS_SENTINELS", ()),
                        master=getattr(settings, "REDIS_SENTINEL_MASTER", ""),
                        password=getattr(settings, "REDIS_PASSWORD", ""),
                        sentinel_password=getattr(settings, "REDIS_SENTINEL_PASSWORD", ""))
