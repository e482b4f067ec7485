"""The one normalised vocabulary every provider's parser speaks.

Events are frozen dataclasses with aware-UTC datetimes. `to_message()` turns one into JSON
primitives only (channels-redis packs with msgpack: a datetime would pass the in-memory layer
and break on Redis); `event_from_message()` is its inverse.

A parser knows the provider's code for an instrument (`code`), not our instrument: the
pipeline resolves it and fills `instrument_id` and `symbol` before anything is published.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

__all__ = [
    "Event",
    "Quote",
    "Bar",
    "Sentiment",
    "News",
    "Alert",
    "AlertRevoked",
    "CrowdPost",
    "ContentUpdated",
    "EVENT_TYPES",
    "event_from_message",
    "utc",
]


def utc(value: datetime) -> datetime:
    """Return `value` as aware UTC; a naive datetime is refused, never guessed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: parsers must produce aware times")
    return value.astimezone(timezone.utc)


def _iso(value: datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


def _parse_iso(value: str) -> datetime:
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    # dataclasses.fields() rebuilds its answer on every call: per event, twice, on the ingest path.
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"

    provider: str
    code: str  # the provider's code for the instrument (ticker, EXCHANGE:SYMBOL, channel id)
    received_at: datetime
    instrument_id: int | None = None
    symbol: str = ""

    def __post_init__(self) -> None:
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, datetime):
                object.__setattr__(self, name, utc(value))

    def dedupe_key(self) -> tuple:
        """Identity of this event at its provider: equal keys mean a redelivery."""
        raise NotImplementedError

    def resolved(self, *, instrument_id: int, symbol: str) -> Event:
        return dataclasses.replace(self, instrument_id=instrument_id, symbol=symbol)

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"kind": self.kind}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = _iso(value)
            elif isinstance(value, tuple):
                value = list(value)
            message[name] = value
        return message


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote(Event):
    kind: ClassVar[str] = "quote"

    ts: datetime
    price: float | None = None
    change: float | None = None
    change_percent: float | None = None
    bid: float | None = None
    ask: float | None = None
    volume: float | None = None
    delay_seconds: int = 0

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.code, self.ts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar(Event):
    kind: ClassVar[str] = "bar"

    interval: str
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None

    def dedupe_key(self) -> tuple:
        # A bar's close moves until it ends: every update is news, so the key includes it.
        return (self.kind, self.provider, self.code, self.interval, self.start, self.close, self.volume)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sentiment(Event):
    kind: ClassVar[str] = "sentiment"

    external_id: str
    ts: datetime
    score: float | None
    scale: str  # the provider's own scale, e.g. "knowsis", "-1..1"; never blended blindly
    raw_score: str = ""
    volume: float | None = None

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.external_id, self.code)


@dataclass(frozen=True, slots=True, kw_only=True)
class News(Event):
    kind: ClassVar[str] = "news"

    external_id: str
    headline: str
    published_at: datetime
    summary: str = ""
    url: str = ""
    category: str = ""
    sentiment: float | None = None  # normalised to -100..100
    raw_sentiment: str = ""  # as the wire sent it
    sentiment_label: str = ""
    confidence: float | None = None  # normalised to 0..100
    key_factors: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""
    price: float | None = None

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.external_id, self.code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(Event):
    kind: ClassVar[str] = "alert"

    external_id: str
    triggered_at: datetime
    level: str = ""
    headline: str = ""
    description: str = ""
    url: str = ""
    audience: str = ""  # set when the alert is for a team rather than an instrument's watchers
    thumbnail_url: str = ""
    related_hashtags: tuple[str, ...] = field(default_factory=tuple)
    notification_id: str = ""

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.external_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRevoked(Event):
    kind: ClassVar[str] = "alert_revoked"

    external_id: str
    revoked_at: datetime

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.external_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrowdPost(Event):
    """One social message's sentiment about one symbol (StockTwits firehose).

    Stored one row per (message, symbol); what is published is the per-minute aggregate
    (a Sentiment event), so a redelivered message can never be counted twice.
    """

    kind: ClassVar[str] = "crowd_post"

    external_id: str  # the provider's message id
    cursor: str  # the stream position (StockTwits seq_id: opaque, kept as text)
    ts: datetime
    score: float | None
    user_id: str = ""
    title: str = ""
    exchange: str = ""
    sector: str = ""
    industry: str = ""

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.external_id, self.code)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentUpdated(Event):
    """The provider has new top content for the instrument (Knowsis `top_content`: the payload is
    empty by design; a client refetches if it shows that content). Published, not stored."""

    kind: ClassVar[str] = "content_updated"

    def dedupe_key(self) -> tuple:
        return (self.kind, self.provider, self.code, self.received_at)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Quote, Bar, Sentiment, News, Alert, AlertRevoked, CrowdPost, ContentUpdated)
}


def event_from_message(message: dict[str, Any]) -> Event:
    """Rebuild an event from `to_message()` output (e.g. in tests or a replaying consumer)."""
    cls = EVENT_TYPES[message["kind"]]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in message:
            continue
        value = message[f.name]
        if isinstance(value, str) and "datetime" in str(f.type) and "None" not in str(f.type):
            value = _parse_iso(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
