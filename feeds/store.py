"""Persist a batch of normalised events in one transaction and say which ones are new.

Called by the pipeline from a worker thread. Dedupe rests on the models' unique constraints:
rows whose natural key is stored already are skipped by the database (`ON CONFLICT DO NOTHING`),
and only the new ones are reported for publishing. Quotes and bars are upserts (latest value
wins) and are conflated: of several updates to one quote in a batch, only the last is published.

Cost is per batch, not per event: a batch is a fixed handful of statements whatever its size
(resolve codes, one insert per kind, one aggregate and one upsert for crowd buckets). The
appended kinds (news, sentiment, alerts, crowd mentions) skip the ORM's model instances: on
PostgreSQL `_pg_insert` is one statement over column arrays with binary parameters that also
returns what was new; elsewhere (SQLite) `_insert_rows` is one executemany. `bulk_create` spent
about 60 µs of Python per news row building instances and quoting parameters, more than all the
rest a worker does with an event (bench/ingest.py measures both).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import timedelta, timezone

from django.db import connection, models, transaction
from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncMinute

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
    if connection.vendor == "postgresql":
        # Every batch, so one array parameter rather than the ORM's `IN (%s, ...)`: a batch names up
        # to hundreds of codes, psycopg re-converts (uncached) a query of over 50 parameters, and the
        # ORM compiles it again each time.
        with connection.cursor() as cursor:
            cursor.execute(_resolve_sql(field), [sorted(codes)])
            rows = cursor.fetchall()
    else:
        rows = Instrument.objects.filter(**{f"{field}__in": codes}).values_list(field, "id", "symbol")
    return {code: (pk, symbol) for code, pk, symbol in rows}


@functools.cache
def _resolve_sql(field: str) -> str:
    quote, meta = connection.ops.quote_name, Instrument._meta
    column = quote(meta.get_field(field).column)
    return (f"SELECT {column}, {quote(meta.pk.column)}, {quote(meta.get_field('symbol').column)} "
            f"FROM {quote(meta.db_table)} WHERE {column} = ANY(%s)")


def _latest_quotes(events: list[ev.Event]) -> list[ev.Event]:
    """`events` with each quote superseded in the batch (same provider and code) dropped, its values
    kept where the newer one has none: only the latest is stored and published (`_store_quotes`),
    and a price flood is mostly superseded quotes, each of which resolving would copy."""
    latest: dict[tuple[str, str], ev.Quote] = {}
    others = []
    for event in events:
        if type(event) is ev.Quote:
            key = (event.provider, event.code)
            latest[key] = _fill_nulls(event, latest[key]) if key in latest else event
        else:
            others.append(event)
    return [*others, *latest.values()] if latest else events


def _resolve(events: list[ev.Event]) -> list[ev.Event]:
    by_provider: dict[str, set[str]] = defaultdict(set)
    for event in events:
        by_provider[event.provider].add(event.code)
    maps = {provider: instruments_resolve(provider=provider, codes=codes) for provider, codes in by_provider.items()}
    resolved = []
    for event in events:
        hit = maps[event.provider].get(event.code)
        if hit is not None:
            resolved.append(_with_instrument(event, *hit))
        elif isinstance(event, (ev.Alert, ev.AlertRevoked, ev.CrowdPost)):
            # Stored even without an instrument we know: an alert is still an alert, and a
            # stream's position must advance past messages about symbols nobody watches.
            resolved.append(event)
    return resolved


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _with_instrument(event: ev.Event, instrument_id: int, symbol: str) -> ev.Event:
    """`event.resolved(...)` without re-running `__init__` and `__post_init__` (the event is already
    valid, only two fields change): a fifth of the cost, and this runs for every event."""
    copy = object.__new__(type(event))
    for name in _field_names(type(event)):
        object.__setattr__(copy, name, getattr(event, name))
    object.__setattr__(copy, "instrument_id", instrument_id)
    object.__setattr__(copy, "symbol", symbol)
    return copy


# -- inserting rows ---------------------------------------------------------------------------

# How a column travels to PostgreSQL in `_pg_insert`: as an array of this type. Text-like columns go
# as text and are converted by the INSERT's assignment cast, which (unlike an explicit cast to
# varchar(n)) refuses a value that is too long instead of cutting it.
_PG_ARRAY_TYPE = {"FloatField": "float8", "DateTimeField": "timestamptz", "BooleanField": "bool",
                  "ForeignKey": "int8", "BigIntegerField": "int8", "IntegerField": "int8",
                  "BigAutoField": "int8", "AutoField": "int8"}


@functools.cache
def _pg_insert_plan(model: type[models.Model], columns: tuple[str, ...], returning: tuple[str, ...],
                    on_conflict: str) -> tuple[str, tuple[Callable | None, ...]]:
    """The INSERT statement for `columns` of `model`, and per column how to adapt a value."""
    fields = [model._meta.get_field(name) for name in columns]
    quote = connection.ops.quote_name
    kinds = [field.get_internal_type() for field in fields]
    params = ", ".join(f"%b::{_PG_ARRAY_TYPE.get(kind, 'text')}[]" for kind in kinds)
    names = ", ".join(f"c{i}" for i in range(len(fields)))
    select = ", ".join(f"c{i}::jsonb" if kind == "JSONField" else f"c{i}" for i, kind in enumerate(kinds))
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"SELECT {select} FROM unnest({params}) AS t({names}) ON CONFLICT {on_conflict}")
    if returning:
        sql += " RETURNING " + ", ".join(quote(model._meta.get_field(name).column) for name in returning)
    adapt = {"JSONField": lambda v: json.dumps(list(v) if isinstance(v, tuple) else v),
             "FloatField": lambda v: None if v is None else float(v)}  # one element type per array
    return sql, tuple(adapt.get(kind) for kind in kinds)


def _pg_insert(model: type[models.Model], columns: tuple[str, ...], rows: list[tuple],
               returning: tuple[str, ...] = (), on_conflict: str = "DO NOTHING") -> set[tuple]:
    """Insert `rows` (values in `columns` order) in one statement, skipping rows that violate a
    unique constraint (or what `on_conflict` says); returns the `returning` columns of the rows
    inserted (or updated).

    A psycopg cursor of our own: Django's cursors quote every parameter into the SQL text, which
    is what cost most. Errors are still translated to Django's (`wrap_database_errors`), so the
    pipeline tells a lost connection (retried) from bad data (dropped) as for any other query."""
    import psycopg

    sql, adapters = _pg_insert_plan(model, columns, returning, on_conflict)
    arrays = [list(values) if adapt is None else [adapt(v) for v in values]
              for values, adapt in zip(zip(*rows), adapters)]
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, arrays)
        return set(cursor.fetchall()) if returning else set()


@functools.cache
def _insert_plan(model: type[models.Model], columns: tuple[str, ...]) -> tuple[str, tuple[Callable | None, ...]]:
    """Elsewhere (SQLite): one parameterised INSERT for executemany, and per column how to adapt a
    value as the ORM would (datetimes as the backend stores them, JSON as text)."""
    fields = [model._meta.get_field(name) for name in columns]
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING")
    adapt = {"DateTimeField": lambda v: connection.ops.adapt_datetimefield_value(v),
             "JSONField": lambda v: json.dumps(list(v) if isinstance(v, tuple) else v)}
    return sql, tuple(adapt.get(field.get_internal_type()) for field in fields)


def _insert_rows(model: type[models.Model], columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert `rows`, skipping rows that violate a unique constraint (not other errors, unlike
    `bulk_create(ignore_conflicts=True)`'s INSERT OR IGNORE on SQLite): what `_pg_insert` does,
    without telling which rows were new, for the databases that have no `unnest`."""
    if connection.vendor == "postgresql":
        _pg_insert(model, columns, rows)
        return
    if not rows:
        return
    sql, adapters = _insert_plan(model, columns)
    with connection.cursor() as cursor:
        cursor.executemany(sql, [tuple(v if adapt is None else adapt(v) for v, adapt in zip(row, adapters))
                                 for row in rows])


def _insert_new(model: type[models.Model], events: list, key_fields: tuple[str, ...],
                columns: tuple[str, ...], values: Callable[[ev.Event], tuple]) -> list[ev.Event]:
    """Insert rows whose natural key is not stored yet; return the events that were new (the
    first of several with one key). `key_fields` name both event attributes and model fields."""
    unique: dict[tuple, ev.Event] = {}
    for event in events:
        unique.setdefault(tuple(getattr(event, f) for f in key_fields), event)
    if connection.vendor == "postgresql":
        inserted = _pg_insert(model, columns, [values(e) for e in unique.values()], returning=key_fields)
        return [event for key, event in unique.items() if key in inserted]
    lookup = {f"{f}__in": {k[i] for k in unique} for i, f in enumerate(key_fields)}
    existing = set(model.objects.filter(**lookup).values_list(*key_fields))
    new = [event for key, event in unique.items() if key not in existing]
    _insert_rows(model, columns, [values(e) for e in new])
    return new


def _latest(events: list[ev.Event], key) -> list[ev.Event]:
    latest: dict[tuple, ev.Event] = {}
    for event in events:
        latest[key(event)] = event  # arrival order: the last one wins
    return list(latest.values())


_QUOTE_VALUES = ("price", "change", "change_percent", "bid", "ask", "volume")


def _fill_nulls(update: ev.Quote, known) -> ev.Quote:
    """`update` with each null value taken from `known` (an earlier Quote event, the stored row, or
    a dict of the stored values)."""
    get = known.get if isinstance(known, dict) else functools.partial(getattr, known)
    filled = {f: get(f) for f in _QUOTE_VALUES if getattr(update, f) is None and get(f) is not None}
    return dataclasses.replace(update, **filled) if filled else update


_QUOTE_COLUMNS = ("instrument_id", "provider", *_QUOTE_VALUES, "delay_seconds", "ts")
# Upsert keeping the stored value where the update has none; returns the row as it now stands.
_QUOTE_UPSERT = ('("instrument_id", "provider") DO UPDATE SET '
                 + ", ".join(f'"{f}" = COALESCE(EXCLUDED."{f}", "feeds_quote"."{f}")' for f in _QUOTE_VALUES)
                 + ', "delay_seconds" = EXCLUDED."delay_seconds", "ts" = EXCLUDED."ts"')


def _store_quotes(quotes: list[ev.Quote]) -> list[ev.Event]:
    # A null field (InsightSentry: "every field except code may be null") means "not sent", never
    # "erase": it keeps the value known from this batch or the stored row, in the row and the push.
    # Read-then-write is safe: one worker per provider account writes that provider's quotes.
    # Superseded quotes went before resolving (`_latest_quotes`, nulls filled from them); an
    # instrument has one code per provider, so one quote per (instrument, provider) is left.
    latest = {(quote.instrument_id, quote.provider): quote for quote in quotes}
    if connection.vendor == "postgresql":
        # One statement: the database fills the nulls from the stored row and says what it kept.
        rows = [(q.instrument_id, q.provider, *(getattr(q, f) for f in _QUOTE_COLUMNS[2:])) for q in latest.values()]
        stored = {(row[0], row[1]): row[2:] for row in _pg_insert(
            Quote, _QUOTE_COLUMNS, rows, returning=("instrument_id", "provider", *_QUOTE_VALUES),
            on_conflict=_QUOTE_UPSERT)}
        return [_fill_nulls(q, dict(zip(_QUOTE_VALUES, stored[key]))) if key in stored else q
                for key, q in latest.items()]
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


_BAR_VALUES = ("open", "high", "low", "close", "volume")
_BAR_UPSERT = ('("instrument_id", "provider", "interval", "start") DO UPDATE SET '
               + ", ".join(f'"{f}" = EXCLUDED."{f}"' for f in _BAR_VALUES))


def _store_bars(bars: list[ev.Bar]) -> list[ev.Event]:
    bars = _latest(bars, lambda b: (b.instrument_id, b.provider, b.interval, b.start))
    if connection.vendor == "postgresql":
        _pg_insert(Bar, ("instrument_id", "provider", "interval", "start", *_BAR_VALUES),
                   [(b.instrument_id, b.provider, b.interval, b.start, *(getattr(b, f) for f in _BAR_VALUES))
                    for b in bars], on_conflict=_BAR_UPSERT)
        return bars
    Bar.objects.bulk_create(
        [Bar(instrument_id=b.instrument_id, provider=b.provider, interval=b.interval, start=b.start,
             **{f: getattr(b, f) for f in _BAR_VALUES}) for b in bars],
        update_conflicts=True,
        unique_fields=["instrument", "provider", "interval", "start"],
        update_fields=list(_BAR_VALUES),
    )
    return bars


_NEWS_COLUMNS = ("instrument_id", "provider", "external_id", "headline", "summary", "url", "category", "sentiment",
                 "raw_sentiment", "sentiment_label", "confidence", "key_factors", "source", "price", "published_at",
                 "received_at")


def _store_news(items: list[ev.News]) -> list[ev.Event]:
    def values(n: ev.News) -> tuple:
        return (n.instrument_id, n.provider, n.external_id, n.headline, n.summary, n.url, n.category, n.sentiment,
                n.raw_sentiment, n.sentiment_label, n.confidence, list(n.key_factors), n.source, n.price,
                n.published_at, n.received_at)

    return _insert_new(NewsItem, items, ("provider", "external_id", "instrument_id"), _NEWS_COLUMNS, values)


_SENTIMENT_COLUMNS = ("instrument_id", "provider", "external_id", "ts", "score", "raw_score", "scale", "volume")


def _store_sentiment(samples: list[ev.Sentiment]) -> list[ev.Event]:
    def values(s: ev.Sentiment) -> tuple:
        return (s.instrument_id, s.provider, s.external_id, s.ts, s.score, s.raw_score, s.scale, s.volume)

    return _insert_new(SentimentSample, samples, ("provider", "external_id", "instrument_id"), _SENTIMENT_COLUMNS,
                       values)


_ALERT_COLUMNS = ("instrument_id", "provider", "external_id", "level", "headline", "description", "url",
                  "triggered_at", "audience", "thumbnail_url", "related_hashtags", "notification_id")


def _store_alerts(alerts: list[ev.Alert]) -> list[ev.Event]:
    def values(a: ev.Alert) -> tuple:
        return (a.instrument_id, a.provider, a.external_id, a.level, a.headline, a.description, a.url,
                a.triggered_at, a.audience, a.thumbnail_url, list(a.related_hashtags), a.notification_id)

    return _insert_new(Alert, alerts, ("provider", "external_id"), _ALERT_COLUMNS, values)


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
    rows = [(p.provider, p.external_id, p.code, p.instrument_id, p.ts, p.score, p.user_id, p.cursor) for p in posts]
    _insert_rows(CrowdMention, _MENTION_COLUMNS, rows)
    last = posts[-1]
    StreamCursor.objects.bulk_create([StreamCursor(provider=last.provider, position=last.cursor)],
                                     update_conflicts=True, unique_fields=["provider"],
                                     update_fields=["position", "updated_at"])
    mentioned = [p for p in posts if p.instrument_id is not None]
    _fill_instrument_details(mentioned)
    buckets = {(p.provider, p.instrument_id, _minute(p.ts)): p for p in mentioned}
    totals = _bucket_totals(buckets)
    samples: list[ev.Event] = []
    for (provider, instrument_id, minute), post in buckets.items():
        count, mean = totals.get((provider, instrument_id, minute), (0, None))
        samples.append(ev.Sentiment(
            provider=provider, code=post.code, received_at=post.received_at, instrument_id=instrument_id,
            symbol=post.symbol, external_id=f"crowd:{minute.isoformat()}", ts=minute, score=mean,
            scale="-1..1 mean per minute", volume=float(count),
        ))
    SentimentSample.objects.bulk_create(
        [SentimentSample(provider=s.provider, external_id=s.external_id, instrument_id=s.instrument_id, ts=s.ts,
                         score=s.score, scale=s.scale, volume=s.volume, raw_score="") for s in samples],
        update_conflicts=True, unique_fields=["provider", "external_id", "instrument"],
        update_fields=["ts", "score", "scale", "volume", "raw_score"],
    )
    return samples


_MENTION_COLUMNS = ("provider", "message_id", "symbol", "instrument_id", "created_at", "score", "user_id", "seq_id")


def _bucket_totals(buckets: Iterable[tuple[str, int, object]]) -> dict[tuple, tuple[int, float | None]]:
    """(message count, mean score) of the stored mentions per (provider, instrument, minute), in
    one query for the whole batch."""
    wanted: dict[tuple, set[int]] = defaultdict(set)
    for provider, instrument_id, minute in buckets:
        wanted[(provider, minute)].add(instrument_id)
    if not wanted:
        return {}
    where = Q()
    for (provider, minute), instrument_ids in wanted.items():
        where |= Q(provider=provider, instrument_id__in=instrument_ids, created_at__gte=minute,
                   created_at__lt=minute + timedelta(minutes=1))
    rows = (CrowdMention.objects.filter(where)
            .annotate(minute=TruncMinute("created_at", tzinfo=timezone.utc))
            .values_list("provider", "instrument_id", "minute")
            .annotate(count=Count("id"), mean=Avg("score")))  # Avg skips null scores
    return {(provider, instrument_id, minute): (count, mean) for provider, instrument_id, minute, count, mean in rows}


def _fill_instrument_details(posts: list[ev.CrowdPost]) -> None:
    """Messages carry each symbol's title and exchange: fill them in where we have none (one
    query per batch finds those; once filled, nothing more is written)."""
    latest = {p.instrument_id: p for p in posts}
    if not latest:
        return
    lacking = (Instrument.objects.filter(Q(name="") | Q(exchange=""), pk__in=latest)
               .values_list("pk", "name", "exchange"))
    for pk, name, exchange in lacking:
        post = latest[pk]
        if post.title and not name:
            Instrument.objects.filter(pk=pk, name="").update(name=post.title[:200])
        if post.exchange and not exchange:
            Instrument.objects.filter(pk=pk, exchange="").update(exchange=post.exchange[:32])


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


def events_store(*, events: list[ev.Event], fence: Callable[[], None] | None = None) -> list[ev.Event]:
    """Store `events` in one transaction; return the new ones, resolved to our instruments.

    `events` must hold whole frames (all the events parsed from one provider message), in arrival
    order: a stream cursor is committed with them (see `_store_crowd_posts`). `fence`, called
    first inside the transaction, raises when this worker may no longer write (feeds/lease.py)."""
    by_type: dict[type, list] = defaultdict(list)
    for event in _resolve(_latest_quotes(events)):
        by_type[type(event)].append(event)
    new: list[ev.Event] = []
    with transaction.atomic():
        if fence is not None:
            fence()
        # Alerts before revocations, so a batch holding both revokes the alert it just stored.
        for event_type, store in _STORERS.items():
            if by_type.get(event_type):
                new.extend(store(by_type[event_type]))
    return new
