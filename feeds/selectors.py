"""Reads on the market-data side, shaped like the live events so the browser has one render path."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import events as ev

from .models import (
    Alert,
    Bar,
    DeliveryState,
    FeedStatus,
    NewsItem,
    Provider,
    ProviderAccount,
    Quote,
    SentimentSample,
    WebhookDelivery,
)

NEWS_PER_INSTRUMENT = 5
SPARK_BARS = 60


def _quote_message(q: Quote) -> dict:
    return ev.Quote(
        provider=q.provider, code="", received_at=q.ts, instrument_id=q.instrument_id, symbol=q.instrument.symbol,
        ts=q.ts, price=q.price, change=q.change, change_percent=q.change_percent, bid=q.bid, ask=q.ask,
        volume=q.volume, delay_seconds=q.delay_seconds,
    ).to_message()


def _news_message(n: NewsItem) -> dict:
    return ev.News(
        provider=n.provider, code=n.instrument.code_for(n.provider) or n.instrument.symbol, received_at=n.received_at,
        instrument_id=n.instrument_id, symbol=n.instrument.symbol, external_id=n.external_id, headline=n.headline,
        published_at=n.published_at, summary=n.summary, url=n.url, category=n.category, sentiment=n.sentiment,
        raw_sentiment=n.raw_sentiment, sentiment_label=n.sentiment_label, confidence=n.confidence,
        key_factors=tuple(n.key_factors), source=n.source, price=n.price,
    ).to_message()


def _bar_message(b: Bar) -> dict:
    return ev.Bar(
        provider=b.provider, code=b.instrument.code_for(b.provider), received_at=b.start, instrument_id=b.instrument_id,
        symbol=b.instrument.symbol, interval=b.interval, start=b.start, open=b.open, high=b.high, low=b.low,
        close=b.close, volume=b.volume,
    ).to_message()


def _sentiment_message(s: SentimentSample) -> dict:
    return ev.Sentiment(
        provider=s.provider, code=s.instrument.code_for(s.provider), received_at=s.ts, instrument_id=s.instrument_id,
        symbol=s.instrument.symbol, external_id=s.external_id, ts=s.ts, score=s.score, scale=s.scale,
        raw_score=s.raw_score, volume=s.volume,
    ).to_message()


def market_snapshot_for_instruments(*, instrument_ids: Iterable[int]) -> dict[int, dict]:
    """Latest quote and the newest news per instrument, keyed by instrument id."""
    ids = set(instrument_ids)
    snapshot: dict[int, dict] = {i: {"quote": None, "news": [], "bar": None, "spark": [], "day_range": None, "sentiment": {}} for i in ids}
    # Several providers may quote one instrument: the most recent quote is shown.
    for quote in Quote.objects.filter(instrument_id__in=ids).select_related("instrument").order_by("ts"):
        snapshot[quote.instrument_id]["quote"] = _quote_message(quote)
    # One small query per instrument keeps "newest N per instrument" portable across SQLite
    # and PostgreSQL; boards hold tens of instruments. Revisit with a window function if needed.
    for instrument_id in ids:
        latest = (
            NewsItem.objects.filter(instrument_id=instrument_id)
            .select_related("instrument")
            .order_by("-published_at", "-id")[:NEWS_PER_INSTRUMENT]
        )
        snapshot[instrument_id]["news"] = [_news_message(n) for n in latest]
        bars = list(Bar.objects.filter(instrument_id=instrument_id).select_related("instrument").order_by("-start")[:SPARK_BARS])
        snapshot[instrument_id]["bar"] = _bar_message(bars[0]) if bars else None
        # The sparkline: recent closes of the instrument's bars, oldest first.
        snapshot[instrument_id]["spark"] = [b.close for b in reversed(bars) if b.interval == bars[0].interval]
        today = [b for b in bars if b.start.date() == bars[0].start.date()] if bars else []
        snapshot[instrument_id]["day_range"] = [min(b.low for b in today), max(b.high for b in today)] if today else None
        for provider in SentimentSample.objects.filter(instrument_id=instrument_id).values_list("provider", flat=True).distinct():
            sample = (SentimentSample.objects.filter(instrument_id=instrument_id, provider=provider)
                      .select_related("instrument").order_by("-ts").first())
            snapshot[instrument_id]["sentiment"][provider] = _sentiment_message(sample)
    return snapshot


def alert_messages_for(*, instrument_ids: Iterable[int], audiences: Iterable[str], limit: int = 30) -> list[dict]:
    """The newest alerts about these instruments or for these audiences, revoked ones included
    (marked `revoked`), shaped like live alert events."""
    alerts = (Alert.objects.filter(Q(instrument_id__in=set(instrument_ids), audience="") | Q(audience__in=set(audiences)))
              .select_related("instrument").order_by("-triggered_at", "-id")[:limit])
    return [
        {**ev.Alert(
            provider=a.provider, code=a.instrument.code_for(a.provider) if a.instrument else "", received_at=a.triggered_at,
            instrument_id=a.instrument_id, symbol=a.instrument.symbol if a.instrument else "", external_id=a.external_id,
            triggered_at=a.triggered_at, level=a.level, headline=a.headline, description=a.description, url=a.url,
            audience=a.audience, thumbnail_url=a.thumbnail_url, related_hashtags=tuple(a.related_hashtags),
            notification_id=a.notification_id,
        ).to_message(), "revoked": a.revoked}
        for a in alerts
    ]


def instrument_detail(*, instrument_id: int, bars: int = 390, samples: int = 500, news: int = 50) -> dict:
    """What the instrument page draws: bars (the most frequent interval), each provider's sentiment
    series on its own scale, the latest news, and every alert (revoked ones marked)."""
    latest_bars = list(Bar.objects.filter(instrument_id=instrument_id).select_related("instrument")
                       .order_by("-start")[:bars])
    interval = latest_bars[0].interval if latest_bars else ""
    sentiment: dict[str, list[dict]] = {}
    for provider in SentimentSample.objects.filter(instrument_id=instrument_id).values_list("provider", flat=True).distinct():
        rows = (SentimentSample.objects.filter(instrument_id=instrument_id, provider=provider)
                .select_related("instrument").order_by("-ts")[:samples])
        sentiment[provider] = [_sentiment_message(r) for r in reversed(rows)]
    items = NewsItem.objects.filter(instrument_id=instrument_id).select_related("instrument").order_by("-published_at")[:news]
    return {
        "bars": [_bar_message(b) for b in reversed(latest_bars) if b.interval == interval],
        "sentiment": sentiment,
        "news": [_news_message(n) for n in items],
        "alerts": alert_messages_for(instrument_ids=[instrument_id], audiences=[], limit=100),
    }


# States a running worker reports. They hold only while its heartbeat moves: a worker that was
# killed, hangs, or cannot reach the database leaves one behind. The others are final states a
# worker writes as it exits (or before it starts), so they stay true without a heartbeat.
LIVE_STATES = frozenset({"connecting", "connected", "degraded", "backing_off"})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def feed_status_stale_after(row: FeedStatus) -> datetime | None:
    """When `row`'s state stops being believable without a newer heartbeat (None: never)."""
    if row.state not in LIVE_STATES:
        return None
    # A row from before heartbeats existed counts from its last write.
    beat = row.heartbeat_at or row.updated_at
    return beat + timedelta(seconds=settings.FEEDS_HEARTBEAT_STALE_SECONDS) if beat else None


def feed_status_message(row: FeedStatus, *, now: datetime | None = None) -> dict:
    """One feed's health as JSON primitives (no credentials: only the provider and state).

    `state` is what to show: the worker's own `worker_state`, or `stale` once `stale_after` has
    passed. The page keeps ageing rows with `stale_after` between pushes."""
    stale_after = feed_status_stale_after(row)
    stale = stale_after is not None and (now or timezone.now()) >= stale_after
    return {
        "provider": row.account.provider, "state": "stale" if stale else row.state, "worker_state": row.state,
        "heartbeat_at": _iso(row.heartbeat_at), "stale_after": _iso(stale_after), "messages": row.messages,
        "parse_errors": row.parse_errors, "reconnects": row.reconnects, "last_error": row.last_error,
        "last_message_at": _iso(row.last_message_at), "updated_at": _iso(row.updated_at),
        "cursor": row.details.get("cursor") or row.details.get("last_seq_id"),
        "subscription_expires_at": row.details.get("subscription_expires_at"),
        "invalid_codes": row.details.get("invalid_codes") or {},
    }


def feed_status_list(*, now: datetime | None = None) -> list[dict]:
    """Every provider account, with its status (accounts that never ran show as stopped)."""
    now = now or timezone.now()
    rows = []
    for account in ProviderAccount.objects.order_by("provider").select_related("status"):
        status = getattr(account, "status", None)
        if status is None and account.provider == Provider.TRENDSPOTTR:
            rows.append(_webhook_status(account))
            continue
        rows.append(feed_status_message(status, now=now) if status else {
            "provider": account.provider, "state": "stopped" if account.enabled else "disabled",
            "worker_state": "stopped" if account.enabled else "disabled", "heartbeat_at": None, "stale_after": None,
            "messages": 0, "parse_errors": 0, "reconnects": 0, "last_error": "", "last_message_at": None, "updated_at": None,
            "cursor": None, "subscription_expires_at": None, "invalid_codes": {}})
    return rows


def _webhook_status(account: ProviderAccount) -> dict:
    """A webhook-driven provider has no worker: its health is what it delivered."""
    deliveries = WebhookDelivery.objects.filter(provider=account.provider)
    last = deliveries.order_by("-received_at").first()
    failed = deliveries.filter(state=DeliveryState.FAILED).order_by("-received_at").first()
    return {
        "provider": account.provider, "state": "webhook" if account.enabled else "disabled",
        "worker_state": "webhook" if account.enabled else "disabled", "heartbeat_at": None, "stale_after": None,
        "messages": deliveries.count(), "parse_errors": deliveries.filter(state=DeliveryState.FAILED).count(),
        "reconnects": 0, "last_error": failed.error if failed else "",
        "last_message_at": _iso(last.received_at) if last else None, "updated_at": None, "cursor": None, "subscription_expires_at": None, "invalid_codes": {},
    }
