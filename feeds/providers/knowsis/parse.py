"""Knowsis Push API channel events -> normalised events. Pure: no I/O, no clock.

Wire reference: ../shared/providers/knowsis-push-api.md. One Pusher channel per asset (its
`websocket_channel`); the event's `data` arrives as a JSON string. Quirks: times are naive
ISO strings (taken as UTC); `price.previous_close` is a string ("13.6100"); the datapoint
scale is undocumented, so it is kept as Knowsis' own ("knowsis" scale) and never blended.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from feeds.events import Alert, AlertRevoked, ContentUpdated, Event, Quote, Sentiment, utc
from feeds.providers.base import UnsupportedMessage, finite_float, json_loads

__all__ = ["PROVIDER", "IGNORED_EVENTS", "parse_event", "KNOWSIS_PRICE_DELAY"]

PROVIDER = "knowsis"
IGNORED_EVENTS = frozenset({"tweets", "remove_tweets"})  # for Knowsis' own tweet widget only
CREDIBILITY = frozenset({"high", "medium", "unknown"})
# The doc says prices are delayed but not by how much; 15 minutes is the exchanges' usual delay
# for redistributed data, so the tile says "delayed" rather than pretending to be live.
KNOWSIS_PRICE_DELAY = 900


def _time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise UnsupportedMessage(f"{field} is not a string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))
    except (ValueError, OverflowError) as exc:  # Overflow: year 1 or 9999 pushed out of range by its offset
        raise UnsupportedMessage(f"bad {field} {value!r}") from exc


def _number(value: Any, field: str, *, required: bool = False) -> float | None:
    if value is None and not required:
        return None
    return finite_float(value, field)  # numbers, and numeric strings such as previous_close


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # arithmetic on extreme prices can overflow to inf


def _alert_id(data: dict) -> str:
    alert_id = data.get("alert_id")
    if not isinstance(alert_id, str) or not alert_id:
        raise UnsupportedMessage("alert without alert_id")
    return alert_id


def parse_event(event: str, data: str | dict | None, *, channel: str, received_at: datetime) -> list[Event]:
    """Parse one channel event.

    Raises:
        UnsupportedMessage: an unknown event name, or a payload that is not what the doc says.
    """
    if event in IGNORED_EVENTS:
        return []
    if isinstance(data, str):
        data = json_loads(data) if data.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnsupportedMessage("data is not a JSON object")
    common = dict(provider=PROVIDER, code=channel, received_at=received_at)
    if event == "datapoint":
        score, volume = _number(data.get("sentiment"), "sentiment"), _number(data.get("volume"), "volume")
        if score is None and volume is None:
            # Not an empty sample: it would show as "no sentiment" on the board and hide the fault.
            raise UnsupportedMessage("datapoint with neither sentiment nor volume")
        return [Sentiment(
            **common, external_id=f"datapoint:{received_at.isoformat()}", ts=received_at, score=score,
            scale="knowsis", raw_score="" if score is None else str(data["sentiment"]), volume=volume,
        )]
    if event == "anomaly_alert_triggered":
        credibility = data.get("credibility") or "unknown"
        return [Alert(
            **common, external_id=_alert_id(data), triggered_at=_time(data.get("trigger_time"), "trigger_time"),
            level=credibility if credibility in CREDIBILITY else "unknown",
            headline="Abnormal conversation detected",
            description=f"Knowsis anomaly alert, source credibility: {credibility}.",
        )]
    if event == "anomaly_alert_removed":
        return [AlertRevoked(**common, external_id=_alert_id(data), revoked_at=received_at)]
    if event == "price":
        last = _number(data.get("last"), "last", required=True)
        previous = _number(data.get("previous_close"), "previous_close")
        change = _finite(last - previous) if previous else None
        return [Quote(
            **common, ts=_time(data["last_trade"], "last_trade") if data.get("last_trade") else received_at,
            price=last, change=change, change_percent=_finite(change / previous * 100) if change is not None else None,
            volume=_number(data.get("volume"), "volume"), delay_seconds=KNOWSIS_PRICE_DELAY,
        )]
    if event == "top_content":
        return [ContentUpdated(**common)]
    raise UnsupportedMessage(f"unknown Knowsis event {event!r}")
