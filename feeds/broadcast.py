"""The one door to the browser: the only module that calls `group_send`.

Each event is serialised to its final WebSocket text once, here, and the consumer forwards
that text as it is: no per-socket encoding, no ORM, no thread hop on the hot path.
Delivery over the layer is at most once; browsers resync from a snapshot on reconnect.

The layer may be down (Redis stopped: every call raises at once) or hung (Redis paused, a dead
link: a call waits for the 15 s socket timeout, and redis-py retries). A feed worker must keep
storing through both, so every `group_send` here is bounded by `CHANNEL_LAYER_SEND_TIMEOUT`
seconds (a batch of events shares one bound) and a failure raises `LayerUnavailable`. The
outage is logged once when it starts and once when it ends, not once per event. After a call
that timed out, publishes are not even tried for `CHANNEL_LAYER_RETRY_SECONDS`, so a hung Redis
costs a worker one bounded wait per interval, not one per batch; a refused connection fails at
once, so each publish tries again and none is skipped once Redis is back. Events not published count
as `tickerwire_events_dropped_total{reason="layer_error"}`; the database has them, and browsers,
whose sockets the outage closed, fetch them from the snapshot when they reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Iterable

from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import metrics
from .events import Event
from .logging import redact
from .groups import audience_group, feed_health_group, instrument_group, user_group

__all__ = ["FORWARD_TYPE", "REVOKE_TYPE", "LayerUnavailable", "event_text", "layer_health", "publish_events",
           "publish_revoke", "publish_feed_status", "publish_audience_notice"]

log = logging.getLogger(__name__)

# Channels message type the consumer forwards verbatim (handler `forward_text`).
FORWARD_TYPE = "forward.text"
REVOKE_TYPE = "access.revoke"


class LayerUnavailable(RuntimeError):
    """The channel layer raised, timed out, or is still in an outage (already logged)."""


class LayerHealth:
    """This process' view of the channel layer: up, or failing since a time (monotonic)."""

    def __init__(self) -> None:
        self.failing_since: float | None = None
        self.failures = 0  # publishes that failed or were skipped during the current outage
        self.error = ""
        self._next_try = 0.0

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def check(self) -> None:
        """Raise at once, without touching the layer, while an outage's retry interval runs."""
        if self.failing_since is not None and time.monotonic() < self._next_try:
            self.failures += 1
            raise LayerUnavailable(self.error)

    def failed(self, exc: BaseException) -> LayerUnavailable:
        now = time.monotonic()
        self.failures += 1
        # Only a layer that did not answer is left alone for a while: a refused connection costs
        # nothing to try again, and trying every time loses nothing once Redis is back.
        hung = isinstance(exc, (TimeoutError, RedisTimeoutError))
        self._next_try = now + float(getattr(settings, "CHANNEL_LAYER_RETRY_SECONDS", 1.0)) if hung else 0.0
        if self.failing_since is None:
            self.failing_since = now
            self.error = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:300]
            log.warning("channel layer unavailable (%s): events are stored but not pushed to browsers until "
                        "it returns", self.error)
        return LayerUnavailable(self.error)

    def succeeded(self) -> None:
        if self.failing_since is not None:
            log.warning("channel layer available again after %.1fs (%d publishes failed meanwhile)",
                        time.monotonic() - self.failing_since, self.failures)
            self.failing_since, self.failures, self.error = None, 0, ""


# One per layer instance (tests swap layers; a process normally has one).
_health: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_health(layer=None) -> LayerHealth:
    """What this process knows of `layer` (default: the default channel layer)."""
    layer = layer if layer is not None else get_channel_layer()
    if layer not in _health:
        _health[layer] = LayerHealth()
    return _health[layer]


class _bounded:
    """`async with _bounded(layer):` the layer calls inside either finish within the send timeout
    or raise LayerUnavailable; the outcome updates the layer's health."""

    def __init__(self, layer) -> None:
        self._health = layer_health(layer)

    async def __aenter__(self) -> None:
        self._health.check()
        self._bound = float(getattr(settings, "CHANNEL_LAYER_SEND_TIMEOUT", 3.0))
        self._timeout = asyncio.timeout(self._bound)
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timeout:  # our bound expired (a CancelledError became TimeoutError)
            raise self._health.failed(TimeoutError(f"no answer within {self._bound:g}s")) from timeout
        if exc is None:
            self._health.succeeded()
            return False
        if isinstance(exc, Exception) and not isinstance(exc, LayerUnavailable):
            # Redis errors, and channels-redis' own; never CancelledError (a shutdown).
            raise self._health.failed(exc) from exc
        return False


def event_text(event: Event) -> str:
    """The exact text a browser receives for `event`."""
    return json.dumps({"type": "event", "event": event.to_message()}, separators=(",", ":"))


async def publish_events(events: Iterable[Event]) -> int:
    """Send each resolved event to its instrument's group. Returns how many were sent.

    Counted by provider (feeds/metrics.py): each event published, or dropped with its reason; if
    the layer fails (raises LayerUnavailable), the event it failed on and every later one count
    as `layer_error`. The whole batch shares one bound of CHANNEL_LAYER_SEND_TIMEOUT seconds."""
    layer = get_channel_layer()
    pending = list(events)
    if not pending:
        return 0
    sent = done = 0
    try:
        async with _bounded(layer):
            for event in pending:
                sent += await _publish_one(layer, event)
                done += 1
    except Exception:
        for event in pending[done:]:
            metrics.EVENTS_DROPPED.labels(event.provider, "layer_error").inc()
        raise
    return sent


async def _publish_one(layer, event: Event) -> int:
    # An alert addressed to an audience (a team, a user) goes to that audience only, even when it
    # concerns an instrument others watch too: a team's own alerts are not everyone's.
    if getattr(event, "audience", ""):
        groups = [audience_group(event.audience)]
    else:
        groups = [instrument_group(event.instrument_id)] if event.instrument_id is not None else []
    if not groups:
        log.debug("not publishing unresolved %s event for %s", event.kind, event.code)
        metrics.EVENTS_DROPPED.labels(event.provider, "no_instrument").inc()
        return 0
    text = event_text(event)
    for group in groups:
        await layer.group_send(group, {"type": FORWARD_TYPE, "text": text})
    metrics.EVENTS_PUBLISHED.labels(event.provider).inc()
    return 1


async def publish_revoke(*, user_id: int, reason: str = "", ended_session: str = "") -> None:
    """Tell every open socket of `user_id` to re-check its session and what it may watch.

    `reason` is shown to the user; `ended_session` (a digest, never a session key) names a session
    whose sockets close whatever the database says yet (logout signals before it flushes)."""
    layer = get_channel_layer()
    async with _bounded(layer):
        await layer.group_send(
            user_group(user_id), {"type": REVOKE_TYPE, "reason": reason, "ended_session": ended_session})


async def publish_feed_status(status: dict) -> None:
    """A feed worker's health (JSON primitives only) to the staff health page."""
    text = json.dumps({"type": "feed_status", "status": status}, separators=(",", ":"))
    layer = get_channel_layer()
    async with _bounded(layer):
        await layer.group_send(feed_health_group(), {"type": FORWARD_TYPE, "text": text})


async def publish_audience_notice(audience: str, notice: dict) -> None:
    """A small notice (JSON primitives) to every socket of an audience, e.g. a team's
    `{"type": "watchlist_changed", ...}`: browsers resync from their snapshot."""
    text = json.dumps(notice, separators=(",", ":"))
    layer = get_channel_layer()
    async with _bounded(layer):
        await layer.group_send(audience_group(audience), {"type": FORWARD_TYPE, "text": text})
