"""The one door to the browser: every frame a browser receives is published here.

Each event is serialised once, here; feeds/livestore.py numbers it in its stream (the group of
its instrument or audience), keeps it in the stream's bounded history and publishes it; each
server process' hub (feeds/hub.py) writes it to that process' sockets. A batch of events is one
Redis round trip. Delivery is at most once; a browser notices a gap by its seq and recovers from
the history, or from its snapshot when the history no longer reaches.

Redis may be down (every call raises at once) or hung (a call waits for its socket timeout). A
feed worker must keep storing through both, so every publish here is bounded by
`CHANNEL_LAYER_SEND_TIMEOUT` seconds (a batch of events shares one bound) and a failure raises
`LayerUnavailable`. The outage is logged once when it starts and once when it ends, not once per
event. After a call that timed out, publishes are not even tried for `CHANNEL_LAYER_RETRY_SECONDS`,
so a hung Redis costs a worker one bounded wait per interval, not one per batch; a refused
connection fails at once, so each publish tries again and none is skipped once Redis is back.
Events not published count as `tickerwire_events_dropped_total{reason="layer_error"}`; the
database has them, and browsers, whose sockets the outage closed, fetch them when they reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Iterable

from django.conf import settings
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import metrics
from .events import Bar, Event, Quote
from .groups import audience_group, feed_health_group, instrument_group, user_group
from .hub import live_backend
from .livestore import Outgoing
from .logging import redact

__all__ = ["REVOKE_TYPE", "LayerUnavailable", "event_body", "event_stream", "layer_health", "publish_events",
           "publish_revoke", "publish_feed_status", "publish_audience_notice"]

log = logging.getLogger(__name__)

REVOKE_TYPE = "access.revoke"  # the control message a consumer re-checks its access on


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
    """What this process knows of the live backend `layer` (default: this process' one)."""
    layer = layer if layer is not None else live_backend()
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


def event_body(event: Event) -> str:
    """The event's JSON as browsers receive it, inside the frame feeds/livestore.py wraps it in."""
    return json.dumps(event.to_message(), separators=(",", ":"))


def event_stream(event: Event) -> str | None:
    """The stream (group) an event goes to, or None if it has nowhere to go. An alert addressed to
    an audience (a team, a user) goes to that audience only, even when it concerns an instrument
    others watch too: a team's own alerts are not everyone's."""
    if getattr(event, "audience", ""):
        return audience_group(event.audience)
    return instrument_group(event.instrument_id) if event.instrument_id is not None else None


def _conflation_key(event: Event) -> str:
    """Latest-state events a slow socket may skip when a newer one of the same key follows."""
    if isinstance(event, Quote):
        return "quote"
    if isinstance(event, Bar):
        return f"bar:{event.interval}:{int(event.start.timestamp())}"
    return "-"


async def _publish(items: list[Outgoing]) -> list[int]:
    live = live_backend()
    async with _bounded(live):
        return await live.publish(items)


async def publish_events(events: Iterable[Event]) -> int:
    """Publish each resolved event to its stream, the batch in one round trip. Returns how many
    were published.

    Counted by provider (feeds/metrics.py): each event published, or dropped with its reason; if
    publishing fails (raises LayerUnavailable) every event of the batch counts as `layer_error`.
    The whole batch shares one bound of CHANNEL_LAYER_SEND_TIMEOUT seconds."""
    items, published = [], []
    for event in events:
        stream = event_stream(event)
        if stream is None:
            log.debug("not publishing unresolved %s event for %s", event.kind, event.code)
            metrics.EVENTS_DROPPED.labels(event.provider, "no_instrument").inc()
            continue
        items.append(Outgoing(stream, event_body(event), _conflation_key(event)))
        published.append(event.provider)
    if not items:
        return 0
    try:
        await _publish(items)
    except Exception:
        for provider in published:
            metrics.EVENTS_DROPPED.labels(provider, "layer_error").inc()
        raise
    for provider in published:
        metrics.EVENTS_PUBLISHED.labels(provider).inc()
    return len(items)


async def publish_revoke(*, user_id: int, reason: str = "", ended_session: str = "") -> None:
    """Tell every open socket of `user_id` to re-check its session and what it may watch.

    `reason` is shown to the user; `ended_session` (a digest, never a session key) names a session
    whose sockets close whatever the database says yet (logout signals before it flushes)."""
    message = {"type": REVOKE_TYPE, "reason": reason, "ended_session": ended_session}
    await _publish([Outgoing(user_group(user_id), json.dumps(message), sequenced=False, control=True)])


async def publish_feed_status(status: dict) -> None:
    """A feed worker's health (JSON primitives only) to the staff health page."""
    text = json.dumps({"type": "feed_status", "status": status}, separators=(",", ":"))
    await _publish([Outgoing(feed_health_group(), text, sequenced=False)])


async def publish_audience_notice(audience: str, notice: dict) -> None:
    """A small notice (JSON primitives) to every socket of an audience, e.g. a team's
    `{"type": "watchlist_changed", ...}`: browsers resync from their snapshot."""
    text = json.dumps(notice, separators=(",", ":"))
    await _publish([Outgoing(audience_group(audience), text, sequenced=False)])
