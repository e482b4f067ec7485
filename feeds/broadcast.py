"""The one door to the browser: the only module that calls `group_send`.

Each event is serialised to its final WebSocket text once, here, and the consumer forwards
that text as it is: no per-socket encoding, no ORM, no thread hop on the hot path.
Delivery over the layer is at most once; browsers resync from a snapshot on reconnect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from channels.layers import get_channel_layer

from . import metrics
from .events import Event
from .groups import audience_group, feed_health_group, instrument_group, user_group

__all__ = ["FORWARD_TYPE", "REVOKE_TYPE", "event_text", "publish_events", "publish_revoke", "publish_feed_status",
           "publish_audience_notice"]

log = logging.getLogger(__name__)

# Channels message type the consumer forwards verbatim (handler `forward_text`).
FORWARD_TYPE = "forward.text"
REVOKE_TYPE = "access.revoke"


def event_text(event: Event) -> str:
    """The exact text a browser receives for `event`."""
    return json.dumps({"type": "event", "event": event.to_message()}, separators=(",", ":"))


async def publish_events(events: Iterable[Event]) -> int:
    """Send each resolved event to its instrument's group. Returns how many were sent.

    Counted by provider (feeds/metrics.py): each event published, or dropped with its reason; if
    the layer raises, the event it raised on and every later one count as `layer_error`."""
    layer = get_channel_layer()
    pending = list(events)
    sent = done = 0
    try:
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
    await get_channel_layer().group_send(
        user_group(user_id), {"type": REVOKE_TYPE, "reason": reason, "ended_session": ended_session})


async def publish_feed_status(status: dict) -> None:
    """A feed worker's health (JSON primitives only) to the staff health page."""
    text = json.dumps({"type": "feed_status", "status": status}, separators=(",", ":"))
    await get_channel_layer().group_send(feed_health_group(), {"type": FORWARD_TYPE, "text": text})


async def publish_audience_notice(audience: str, notice: dict) -> None:
    """A small notice (JSON primitives) to every socket of an audience, e.g. a team's
    `{"type": "watchlist_changed", ...}`: browsers resync from their snapshot."""
    text = json.dumps(notice, separators=(",", ":"))
    await get_channel_layer().group_send(audience_group(audience), {"type": FORWARD_TYPE, "text": text})
