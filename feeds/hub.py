"""This process' fan-out: one subscription per stream, each frame written to every local socket.

Measured (bench/README.md): Channels' per-socket layer inbox costs a task, a queue hop and a
Redis read per socket per message; the hub costs one pub/sub message per *process* per event,
then a plain loop over that stream's sinks. Channels stays the ASGI/WebSocket layer, and group
names (feeds/groups.py) stay the vocabulary: a stream is a group.

Contract for a consumer (dashboard/consumers.py):
    hub = await get_hub()
    await hub.join(sink, streams)   # returns once this process receives every later event
    await hub.read(streams, since)  # then the streams' positions (and history after `since`)
    hub.leave(sink, streams)
If this process' subscription fails (Redis gone), every sink's `on_lost` is called: its socket
closes, and the browser reconnects, then recovers from the streams' history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from functools import cache

from django.conf import settings
from redis.exceptions import ResponseError  # a script refused for its input, not a lost connection

from project.redisclient import RedisTarget, settings_redis_target

from . import metrics
from .backoff import Backoff
from .livestore import HEADER_CONTROL, LocalLive, RedisLive
from .sinks import Frame, Sink

__all__ = ["Hub", "get_hub", "live_backend", "HubUnavailable"]

log = logging.getLogger(__name__)
POLL_SECONDS = 0.02  # how often sockets with waiting frames are offered them again


class HubUnavailable(RuntimeError):
    """This process cannot subscribe (Redis unreachable)."""


@cache
def _backend(target: RedisTarget | None, prefix: str, size: int, seconds: float, send_timeout: float):
    if target is not None:
        return RedisLive(target=target, prefix=prefix, history_size=size, history_seconds=seconds,
                         connection=settings.REDIS_CONNECTION, send_timeout=send_timeout)
    return LocalLive(history_size=size, history_seconds=seconds)


def live_backend() -> RedisLive | LocalLive:
    """Redis when REDIS_URL or REDIS_SENTINELS is set, else this process' memory (the embedded default)."""
    return _backend(settings_redis_target(settings), settings.LIVE_PREFIX, settings.LIVE_HISTORY_SIZE,
                    settings.LIVE_HISTORY_SECONDS, settings.CHANNEL_LAYER_SEND_TIMEOUT)


class Hub:
    def __init__(self, live) -> None:
        self.live = live
        self.groups: dict[str, set[Sink]] = {}
        self.sinks: dict[Sink, object] = {}  # sink -> on_lost
        self._subscribed: set[str] = set()
        self._lock = asyncio.Lock()
        self._subscription = None
        self._reader: asyncio.Task | None = None
        self._waiting: set[Sink] = set()
        self._poller: asyncio.Task | None = None
        # Between tries to subscribe again after a loss. The cap adds to a Sentinel failover's own
        # time before browsers get events again (issue 12: within 10 s); a try costs Redis one
        # connection per server process, so 2 s is cheap even through a long outage.
        self._backoff = Backoff(base=0.5, cap=2.0, healthy_after=30.0)
        self._retry_at = 0.0
        self._up_since: float | None = None  # when the current subscription was first confirmed
        self._lost_at: float | None = None  # when the last one failed, until one is confirmed again
        # Position reads waiting for the next round trip: (streams, since, future).
        self._reads: list[tuple[list[str], dict, asyncio.Future]] = []
        self._reader_of_positions: asyncio.Task | None = None

    # -- sockets --------------------------------------------------------------------------
    def sink(self, writer, *, on_control=None, on_lost=None) -> Sink:
        sink = Sink(writer, max_frames=settings.LIVE_SOCKET_QUEUE_FRAMES, max_bytes=settings.LIVE_SOCKET_QUEUE_BYTES,
                    on_waiting=self._on_waiting, on_control=on_control)
        self.sinks[sink] = on_lost
        return sink

    def drop(self, sink: Sink) -> None:
        """The socket is gone: out of every group, queue released."""
        self.leave(sink, [g for g, members in self.groups.items() if sink in members])
        self.sinks.pop(sink, None)
        self._waiting.discard(sink)
        if sink.dropped or sink.conflated:
            log.info("socket closed after %d frames sent, %d conflated, %d dropped (slow browser)",
                     sink.sent, sink.conflated, sink.dropped)
        sink.close()

    async def join(self, sink: Sink, streams) -> None:
        """Add `sink` to `streams`; returns once this process is subscribed to each of them."""
        streams = list(streams)
        for stream in streams:
            self.groups.setdefault(stream, set()).add(sink)
        missing = [s for s in streams if s not in self._subscribed]
        if not missing:
            return
        async with self._lock:
            missing = [s for s in missing if s not in self._subscribed and s in self.groups]
            if missing:
                await self._subscribe(missing)

    def leave(self, sink: Sink, streams) -> None:
        emptied = []
        for stream in streams:
            members = self.groups.get(stream)
            if members is not None:
                members.discard(sink)
                if not members:
                    del self.groups[stream]
                    emptied.append(stream)
        if emptied:
            asyncio.ensure_future(self._unsubscribe_unused(emptied))

    # -- positions ------------------------------------------------------------------------
    async def read(self, streams: list[str], since: dict) -> dict:
        """live.read(streams, since), shared with the other sockets asking meanwhile.

        Connecting 1000 sockets made 1000 round trips to Redis, 50 at a time, and a pool of 50
        connections. Here one read is on its way at a time; the requests that arrive meanwhile go
        together in the next one. Every request is sent after it was made, so after its caller
        joined the streams: the position it gets is one its subscription already covers, as with a
        read of its own. A stream goes once per read, with one `since` (or none): a request that
        asks for it with another waits for the read after."""
        future = asyncio.get_running_loop().create_future()
        self._reads.append((list(streams), since, future))
        if self._reader_of_positions is None or self._reader_of_positions.done():
            self._reader_of_positions = asyncio.ensure_future(self._read_positions())
        return await future

    async def _read_positions(self) -> None:
        try:
            while self._reads:
                batch, streams, since, later = [], {}, {}, []
                for request in self._reads:
                    wanted, asked, future = request
                    if future.done():  # its caller went away
                        continue
                    if any(s in streams and since.get(s) != asked.get(s) for s in wanted):
                        later.append(request)
                        continue
                    for stream in wanted:
                        streams[stream] = None
                        if stream in asked:
                            since[stream] = asked[stream]
                    batch.append(request)
                self._reads = later
                if batch:
                    await self._read_batch(batch, list(streams), since)
        finally:  # cancelled, or a bug: nobody may wait for a read that is not coming
            for _, _, future in self._reads:
                if not future.done():
                    future.set_exception(HubUnavailable("position read abandoned"))
            self._reads = []

    async def _read_batch(self, batch: list, streams: list[str], since: dict) -> None:
        try:
            try:
                recoveries = await self.live.read(streams, since)
            except ResponseError:
                if len(batch) == 1:
                    raise
                # Redis refused the script for something a request asked (its own checks in
                # dashboard/consumers.py should make that impossible): one bad request must not fail
                # its neighbours, so each goes again alone.
                for request in batch:
                    wanted, asked, _ = request
                    await self._read_batch([request], list(wanted), {s: asked[s] for s in wanted if s in asked})
                return
            for wanted, _, future in batch:
                if not future.done():
                    future.set_result({stream: recoveries[stream] for stream in wanted})
        except BaseException as exc:  # each caller handles it as it handled its own read failing
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else HubUnavailable(repr(exc)))
            if not isinstance(exc, Exception):
                raise  # cancelled (or exiting): the finally above fails whoever still waits

    # -- subscription ---------------------------------------------------------------------
    async def _subscribe(self, streams: list[str]) -> None:
        if self._subscription is None:
            await self._open()
        subscription = self._subscription
        try:
            await asyncio.wait_for(subscription.subscribe(streams), settings.CHANNEL_LAYER_SEND_TIMEOUT)
        except Exception as exc:  # refused, timed out, or redis-py's own errors
            await self._lost(exc)
            raise HubUnavailable(str(exc)) from exc
        self._subscribed.update(streams)
        if self._up_since is None and subscription is self._subscription:
            self._up_since = asyncio.get_running_loop().time()
            if self._lost_at is not None:
                log.warning("live subscription restored on %s after %.1fs", subscription.server,
                            self._up_since - self._lost_at)
                self._lost_at = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise HubUnavailable("live subscription down; retrying shortly")
        self._subscription = self.live.subscription(self._deliver)
        self._reader = asyncio.ensure_future(self._read(self._subscription))

    async def _read(self, subscription) -> None:
        try:
            await subscription.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if subscription is self._subscription:
                await self._lost(exc)

    async def _lost(self, exc: BaseException) -> None:
        """The subscription failed: events may have been missed, so every socket is closed (its
        browser reconnects and recovers from history); the next join opens a new subscription."""
        subscription, self._subscription = self._subscription, None
        self._subscribed.clear()
        now = asyncio.get_running_loop().time()
        if self._up_since is not None:
            # A subscription that served long enough was healthy: the next failure (a failover
            # next week) starts again from the shortest delay, not where the last outage ended.
            self._backoff.connection_ended(lasted=now - self._up_since)
        self._up_since, self._lost_at = None, self._lost_at or now
        self._retry_at = now + self._backoff.next_delay()
        # Cut: redis-py's MasterNotFoundError (no primary during a failover) holds every sentinel
        # client's repr, several kilobytes a line.
        log.warning("live subscription lost (%s: %s): closing %d browser sockets", type(exc).__name__,
                    str(exc)[:300], len(self.sinks))
        metrics.LIVE_SUBSCRIPTION_LOST.inc()
        for sink, on_lost in list(self.sinks.items()):
            if on_lost is not None:
                on_lost()
        if subscription is not None:
            try:
                await subscription.close()
            except Exception:  # already broken
                pass

    async def _unsubscribe_unused(self, streams: list[str]) -> None:
        async with self._lock:
            unused = [s for s in streams if s not in self.groups and s in self._subscribed]
            if not unused or self._subscription is None:
                return
            self._subscribed.difference_update(unused)
            try:
                await self._subscription.unsubscribe(unused)
            except Exception:  # the reader notices a broken connection
                log.debug("unsubscribe failed", exc_info=True)

    # -- delivery -------------------------------------------------------------------------
    def _deliver(self, stream: str, payload: bytes) -> None:
        sinks = self.groups.get(stream)
        if not sinks:
            return
        head, _, body = payload.partition(b"\n")
        if head == HEADER_CONTROL:
            message = json.loads(body)
            for sink in list(sinks):
                sink.control(message)
            return
        seq, _, key = head.partition(b" ")
        frame = Frame(stream, 0 if seq == b"-" else int(seq), "" if key == b"-" else key.decode(), body)
        for sink in sinks:
            sink.offer(frame)

    def _on_waiting(self, sink: Sink) -> None:
        self._waiting.add(sink)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        """Offer waiting frames again while some socket has any (its transport drained meanwhile)."""
        while self._waiting:
            await asyncio.sleep(POLL_SECONDS)
            for sink in list(self._waiting):
                if sink.closed or sink.flush():
                    self._waiting.discard(sink)


_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; tests run a loop each)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.live is not live_backend():
        hub = _hubs[loop] = Hub(live_backend())
    return hub
