"""Persist a batch of normalised events in one transaction and say which ones are new.

Called by the pipeline from a worker thread. Dedupe rests on the models' unique constraints:
we look up which natural keys already exist, insert the rest with `ignore_conflicts`, and
report only the new ones for publishing. Quotes and bars are upserts (latest value wins) and
are conflated: of several updates to one quote in a batch, only the last is published.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Avg, Count

from . import events as ev
from .models import (
    PROVIDER_CODE_FIELD,
    Alert,
    Bar,
    CrowdMention,
    Instrument,
    NewsItem,
    Quote,
    SentimentSample,
    StreamCursor,
)

__all__ = ["events_store", "instruments_resolve"]


def instruments_resolve(*, provider: str, codes: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Map provider codes to `(instrument_id, symbol)`; unknown codes are left out."""
    field = PROVIDER_CODE_FIELD.get(provider)
    codes = set(codes)
    if field is None or not codes:
        return {}
    rows = Instrument.objects.filter(**{f"{field}__in": codes}).values_list(field, "id", "symbol")
    return {code: (pk, symbol) for code, pk, symbol in rows}


def _resolve(events: list[ev.Event]) -> list[ev.Event]:
    by_provider: dict[str, set[str]] = defaultdict(set)
    for event in events:
        by_provider[event.provider].add(event.code)
    maps = {provider: instruments_resolve(provider=provider, codes=codes) for provider, codes in by_provider.items()}
    resolved = []
    for event in events:
        hit = maps[event.provider].get(event.code)
        if hit is not None:
            resolved.append(event.resolved(instrument_id=hit[0], symbol=hit[1]))
        elif isinstance(event, (ev.Alert, ev.AlertRevoked, ev.CrowdPost)):
            # Stored even without an instrument we know: an alert is still an alert, and a
            # stream's position must advance past messages about symbols nobody watches.
            resolved.append(event)
    return resolved


def _latest(events: list[ev.Event], key) -> list[ev.Event]:
    latest: dict[tuple, ev.Event] = {}
    for event in events:
        latest[key(event)] = event  # arrival order: the last one wins
    return list(latest.values())


_QUOTE_VALUES = ("price", "change", "change_percent", "bid", "ask", "volume")


def _fill_nulls(update: ev.Quote, known) -> ev.Quote:
    """`update` with each null value taken from `known` (an earlier Quote event or the stored row)."""
    filled = {f: getattr(known, f) for f in _QUOTE_VALUES
              if getattr(update, f) is None and getattr(known, f) is not None}
    return dataclasses.replace(update, **filled) if filled else update


def _store_quotes(quotes: list[ev.Quote]) -> list[ev.Event]:
    # A null field (InsightSentry: "every field except code may be null") means "not sent", never
    # "erase": it keeps the value known from this batch or the stored row, in the row and the push.
    # Read-then-write is safe: one worker per provider account writes that provider's quotes.
    latest: dict[tuple, ev.Quote] = {}
    for quote in quotes:
        key = (quote.instrument_id, quote.provider)
        latest[key] = _fill_nulls(quote, latest[key]) if key in latest else quote
    if any(getattr(q, f) is None for q in latest.values() for f in _QUOTE_VALUES):
        stored = Quote.objects.filter(instrument_id__in={k[0] for k in latest}, provider__in={k[1] for k in latest})
        rows = {(row.instrument_id, row.provider): row for row in stored}
        latest = {key: _fill_nulls(q, rows[key]) if key in rows else q for key, q in latest.items()}
    quotes = list(latest.values())
    fields = ["price", "change", "change_percent", "bid", "ask", "volume", "delay_seconds", "ts"]
    Quote.objects.bulk_create(
        [Quote(instrument_id=q.instrument_id, provider=q.provider, **{f: getattr(q, f) for f in fields}) for q in quotes],
        update_conflicts=True,
        unique_fields=["instrument", "provider"],
        update_fields=fields,
    )
    return quotes


def _store_bars(bars: list[ev.Bar]) -> list[ev.Event]:
    bars = _latest(bars, lambda b: (b.instrument_id, b.provider, b.interval, b.start))
    fields = ["open", "high", "low", "close", "volume"]
    Bar.objects.bulk_create(
        [
            Bar(instrument_id=b.instrument_id, provider=b.provider, interval=b.interval, start=b.start,
                **{f: getattr(b, f) for f in fields})
            for b in bars
        ],
        update_conflicts=True,
        unique_fields=["instrument", "provider", "interval", "start"],
        update_fields=fields,
    )
    return bars


def _insert_new(model, events: list, build, key_fields: tuple[str, ...]) -> list[ev.Event]:
    """Insert rows whose natural key is not stored yet; return the events that were new."""
    unique: dict[tuple, ev.Event] = {}
    for event in events:
        unique.setdefault(tuple(getattr(event, f) for f in key_fields), event)
    lookup = {f"{f}__in": {k[i] for k in unique} for i, f in enumerate(key_fields)}
    existing = set(model.objects.filter(**lookup).values_list(*key_fields))
    new = [event for key, event in unique.items() if key not in existing]
    model.objects.bulk_create([build(e) for e in new], ignore_conflicts=True)
    return new


def _store_news(items: list[ev.News]) -> list[ev.Event]:
    def build(n: ev.News) -> NewsItem:
        return NewsItem(
            instrument_id=n.instrument_id, provider=n.provider, external_id=n.external_id, headline=n.headline,
            summary=n.summary, url=n.url, category=n.category, sentiment=n.sentiment,
            raw_sentiment=n.raw_sentiment, sentiment_label=n.sentiment_label, confidence=n.confidence,
            key_factors=list(n.key_factors), source=n.source, price=n.price, published_at=n.published_at,
            received_at=n.received_at,
        )

    return _insert_new(NewsItem, items, build, ("provider", "external_id", "instrument_id"))


def _store_sentiment(samples: list[ev.Sentiment]) -> list[ev.Event]:
    def build(s: ev.Sentiment) -> SentimentSample:
        return SentimentSample(
            instrument_id=s.instrument_id, provider=s.provider, external_id=s.external_id, ts=s.ts,
            score=s.score, raw_score=s.raw_score, scale=s.scale, volume=s.volume,
        )

    return _insert_new(SentimentSample, samples, build, ("provider", "external_id", "instrument_id"))


def _store_alerts(alerts: list[ev.Alert]) -> list[ev.Event]:
    def build(a: ev.Alert) -> Alert:
        return Alert(
            instrument_id=a.instrument_id, provider=a.provider, external_id=a.external_id, level=a.level,
            headline=a.headline, description=a.description, url=a.url, triggered_at=a.triggered_at,
            audience=a.audience, thumbnail_url=a.thumbnail_url, related_hashtags=list(a.related_hashtags),
            notification_id=a.notification_id,
        )

    return _insert_new(Alert, alerts, build, ("provider", "external_id"))


def _store_revocations(revocations: list[ev.AlertRevoked]) -> list[ev.Event]:
    # Revoked alerts are kept (history) and marked; only the first revocation is news.
    return [
        r for r in revocations
        if Alert.objects.filter(provider=r.provider, external_id=r.external_id, revoked_at__isnull=True)
        .update(revoked_at=r.revoked_at)
    ]


def _minute(value):
    return value.replace(second=0, microsecond=0)


def _store_crowd_posts(posts: list[ev.CrowdPost]) -> list[ev.Event]:
    """Store mentions, advance the cursor, and recompute the per-minute buckets they touch.

    Buckets are recomputed from the stored rows (mean score, message count), so replaying an
    overlap after a resume changes nothing. The cursor is the last position in this batch:
    written in the same transaction as the rows, it never runs ahead of what is stored, provided
    the batch holds every symbol of its last message. The pipeline guarantees that (it never
    splits one frame's events across batches); a batch ending inside a message would commit its
    position with only some of its rows, and a restart would resume past the rest.
    """
    CrowdMention.objects.bulk_create(
        [CrowdMention(provider=p.provider, message_id=p.external_id, symbol=p.code, instrument_id=p.instrument_id,
                      created_at=p.ts, score=p.score, user_id=p.user_id, seq_id=p.cursor) for p in posts],
        ignore_conflicts=True,
    )
    last = posts[-1]
    StreamCursor.objects.update_or_create(provider=last.provider, defaults={"position": last.cursor})
    _fill_instrument_details([p for p in posts if p.instrument_id is not None])
    buckets = {(p.provider, p.instrument_id, _minute(p.ts)): p for p in posts if p.instrument_id is not None}
    samples: list[ev.Event] = []
    for (provider, instrument_id, minute), post in buckets.items():
        rows = CrowdMention.objects.filter(provider=provider, instrument_id=instrument_id, created_at__gte=minute,
                                           created_at__lt=minute + timedelta(minutes=1))
        totals = rows.aggregate(count=Count("id"), mean=Avg("score"))  # Avg skips null scores
        count, mean = totals["count"], totals["mean"]
        sample = ev.Sentiment(
            provider=provider, code=post.code, received_at=post.received_at, instrument_id=instrument_id,
            symbol=post.symbol, external_id=f"crowd:{minute.isoformat()}", ts=minute, score=mean,
            scale="-1..1 mean per minute", volume=float(count),
        )
        SentimentSample.objects.update_or_create(
            provider=provider, external_id=sample.external_id, instrument_id=instrument_id,
            defaults={"ts": minute, "score": mean, "scale": sample.scale, "volume": count, "raw_score": ""},
        )
        samples.append(sample)
    return samples


def _fill_instrument_details(posts: list[ev.CrowdPost]) -> None:
    """Messages carry each symbol's title and exchange: fill them in where we have none."""
    for post in {p.instrument_id: p for p in posts}.values():
        if post.title:
            Instrument.objects.filter(pk=post.instrument_id, name="").update(name=post.title[:200])
        if post.exchange:
            Instrument.objects.filter(pk=post.instrument_id, exchange="").update(exchange=post.exchange[:32])


_STORERS = {
    ev.Quote: _store_quotes,
    ev.Bar: _store_bars,
    ev.News: _store_news,
    ev.Sentiment: _store_sentiment,
    ev.Alert: _store_alerts,
    ev.AlertRevoked: _store_revocations,
    ev.CrowdPost: _store_crowd_posts,
    ev.ContentUpdated: lambda events: _latest(events, lambda e: e.instrument_id),  # nothing to store
}


def events_store(*, events: list[ev.Event]) -> list[ev.Event]:
    """Store `events` in one transaction; return the new ones, resolved to our instruments.

    `events` must hold whole frames (all the events parsed from one provider message), in arrival
    order: a stream cursor is committed with them (see `_store_crowd_posts`)."""
    by_type: dict[type, list] = defaultdict(list)
    for event in _resolve(events):
        by_type[type(event)].append(event)
    new: list[ev.Event] = []
    with transaction.atomic():
        # Alerts before revocations, so a batch holding both revokes the alert it just stored.
        for event_type, store in _STORERS.items():
            if by_type.get(event_type):
                new.extend(store(by_type[event_type]))
    return new
