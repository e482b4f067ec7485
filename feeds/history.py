"""The instrument page's stored history, a page at a time: bars rolled up in SQL to a view's interval,
each sentiment provider's mean per bar, and the news and alerts of the same window.

A page is the `limit` newest buckets before `before` (exclusive, aligned to the interval); the next
page asks for those before the oldest bucket returned, so pages neither overlap nor leave a gap,
however sparse the data (nights, weekends). Five queries whatever the page size.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import connections, router
from django.db.models import Q

from .models import Alert, Bar, NewsItem
from .retention_policy import HOUR_BARS, MINUTE_BARS, SECOND_BARS, bucket_start, interval_seconds
from .selectors import EPOCH, _alert_messages, _iso

__all__ = ["HISTORY_INTERVALS", "MAX_HISTORY_LIMIT", "csv_cell", "history_csv_rows", "history_page"]

# The views the page offers, in seconds.
HISTORY_INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
MAX_HISTORY_LIMIT = 1000
MARKERS_PER_PAGE = 200
# Every size a bar may be stored at: what the providers send and what retention rolls up to (1D).
STORED_SIZES = {name: interval_seconds(name) for name in (*SECOND_BARS, *MINUTE_BARS, *HOUR_BARS, "1D", "1d")}
# Rows read to find where a page starts, per requested bucket: a bucket's worth of minute bars, the
# finest size kept past a week. Finer rows (second bars) only make a page hold fewer buckets; the
# next one goes on from there. The cap bounds a daily page's read (its older rows are daily bars).
ASSUMED_FINEST = 60
MAX_ROWS_SCANNED = 100_000


def _bucket_sql(vendor: str, column: str) -> str:
    """SQL for the start (epoch seconds) of the `%s`-second bucket holding `column`; takes the
    bucket size twice as parameters. UTC multiples, as feeds.retention_policy.bucket_start."""
    if vendor == "postgresql":
        return f"(FLOOR(EXTRACT(EPOCH FROM {column}) / %s) * %s)::bigint"
    return f"((CAST(strftime('%%s', {column}) AS INTEGER) / %s) * %s)"  # SQLite stores UTC text


def _sources(span: int) -> dict[str, int]:
    """Stored sizes a bucket of `span` seconds can be built from exactly: those dividing it."""
    return {name: size for name, size in STORED_SIZES.items() if size <= span and span % size == 0}


def _rolled_bars(instrument_id: int, *, span: int, low: datetime, before: datetime, limit: int) -> list[tuple]:
    """(bucket epoch, open, high, low, close, volume) of the `limit` newest buckets in [low, before),
    newest first. In each bucket only the finest stored size present counts (a period kept both as
    minutes and as their hourly roll-up is counted once): first open, highest high, lowest low, last
    close, summed volume, as retention rolls up (feeds.retention_policy.bar_rollup)."""
    sources = _sources(span)
    connection = connections[router.db_for_read(Bar)]
    table, bucket = connection.ops.quote_name(Bar._meta.db_table), _bucket_sql(connection.vendor, "start")
    sizes = " ".join("WHEN %s THEN %s" for _ in sources)
    marks = ", ".join("%s" for _ in sources)
    sql = f"""
        SELECT bucket, MAX(first_open), MAX(high), MIN(low), MAX(last_close), SUM(volume) FROM (
            SELECT bucket, high, low, volume,
                   FIRST_VALUE(open) OVER (PARTITION BY bucket ORDER BY start, id) AS first_open,
                   FIRST_VALUE(close) OVER (PARTITION BY bucket ORDER BY start DESC, id DESC) AS last_close
            FROM (
                SELECT id, start, open, high, low, close, volume, size, bucket,
                       MIN(size) OVER (PARTITION BY bucket) AS finest
                FROM (
                    SELECT id, start, open, high, low, close, volume,
                           CASE interval {sizes} END AS size, {bucket} AS bucket
                    FROM {table}
                    WHERE instrument_id = %s AND interval IN ({marks}) AND start >= %s AND start < %s
                ) AS sized
            ) AS picked
            WHERE size = finest
        ) AS ranked
        GROUP BY bucket ORDER BY bucket DESC LIMIT %s"""
    field = Bar._meta.get_field("start")
    params = [p for item in sources.items() for p in item] + [span, span, instrument_id, *sources,
                                                              field.get_db_prep_value(low, connection),
                                                              field.get_db_prep_value(before, connection), limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _sentiment_means(instrument_id: int, *, span: int, low: datetime, before: datetime) -> dict[str, dict[int, float]]:
    """{provider: {bucket epoch: mean score}} in [low, before): each provider on its own scale."""
    from .models import SentimentSample

    connection = connections[router.db_for_read(SentimentSample)]
    table, bucket = connection.ops.quote_name(SentimentSample._meta.db_table), _bucket_sql(connection.vendor, "ts")
    field = SentimentSample._meta.get_field("ts")
    sql = (f"SELECT provider, {bucket} AS bucket, AVG(score) FROM {table} WHERE instrument_id = %s AND ts >= %s "
           "AND ts < %s AND score IS NOT NULL GROUP BY provider, bucket ORDER BY bucket")
    means: dict[str, dict[int, float]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [span, span, instrument_id, field.get_db_prep_value(low, connection),
                             field.get_db_prep_value(before, connection)])
        for provider, at, mean in cursor.fetchall():
            means.setdefault(provider, {})[int(at)] = mean
    return means


def _epoch(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), dt_timezone.utc)


def history_page(*, instrument_id: int, interval: str, before: datetime, limit: int,
                 audiences: Iterable[str] = ()) -> dict:
    """One page of history (see the module docstring). `before` is floored to the interval.

    Returns {"interval", "before", "bars": [{start, open, high, low, close, volume}] oldest first,
    "sentiment": {provider: [{ts, score}]} (the mean per bar), "news" and "alerts" of the window
    (the newest MARKERS_PER_PAGE each; alerts provider-wide or for `audiences`, as the instrument
    page's timeline), "next_before" (ask for it to go further back; None: no older bars)}."""
    span = HISTORY_INTERVALS[interval]
    limit = max(1, min(int(limit), MAX_HISTORY_LIMIT))
    before = bucket_start(before, span)
    empty = {"interval": interval, "before": _iso(before), "bars": [], "sentiment": {}, "news": [], "alerts": [],
             "next_before": None}
    scan = min(limit * max(1, span // ASSUMED_FINEST), MAX_ROWS_SCANNED)
    older = Bar.objects.filter(instrument_id=instrument_id, interval__in=list(_sources(span)), start__lt=before)
    kth = list(older.order_by("-start").values_list("start", flat=True)[scan - 1:scan])
    # From the start of the bucket holding the scan's last row: the page's oldest bucket is whole.
    low = bucket_start(kth[0], span) if kth else EPOCH
    rows = _rolled_bars(instrument_id, span=span, low=low, before=before, limit=limit + 1)
    more = len(rows) > limit or bool(kth)
    rows = list(reversed(rows[:limit]))
    if not rows:
        return empty
    start = _epoch(rows[0][0])
    sentiment = _sentiment_means(instrument_id, span=span, low=start, before=before)
    news = (NewsItem.objects.filter(instrument_id=instrument_id, published_at__gte=start, published_at__lt=before)
            .order_by("-published_at", "-id").values("provider", "external_id", "headline", "published_at", "sentiment",
                                                     "url")[:MARKERS_PER_PAGE])
    alerts = _alert_messages(Alert.objects.filter(Q(audience="") | Q(audience__in=set(audiences)),
                                                  instrument_id=instrument_id, triggered_at__gte=start,
                                                  triggered_at__lt=before), limit=MARKERS_PER_PAGE)
    return {
        **empty,
        "bars": [{"start": _iso(_epoch(at)), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                 for at, o, h, lo, c, v in rows],
        "sentiment": {provider: [{"ts": _iso(_epoch(at)), "score": mean} for at, mean in sorted(buckets.items())]
                      for provider, buckets in sentiment.items()},
        "news": [{**n, "published_at": _iso(n["published_at"])} for n in reversed(news)],
        "alerts": list(reversed(alerts)),
        "next_before": _iso(start) if more else None,
    }


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> object:
    """A CSV cell as a spreadsheet must not evaluate it: text starting like a formula gets a leading
    quote. Numbers stay numbers (a negative sentiment is no formula, and quoting it would turn it
    into text); provider strings (headlines) are text and are escaped."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def history_csv_rows(page: dict) -> list[list]:
    """A page as CSV rows: a header, then one row per bar with each sentiment provider's mean and the
    headlines published within the bar."""
    providers = sorted(page["sentiment"])
    means = {p: {s["ts"]: s["score"] for s in page["sentiment"][p]} for p in providers}
    span = timedelta(seconds=HISTORY_INTERVALS[page["interval"]])
    starts = [datetime.fromisoformat(b["start"]) for b in page["bars"]]
    headlines: dict[int, list[str]] = {}
    for n in page["news"]:
        at = datetime.fromisoformat(n["published_at"])
        index = bisect.bisect_right(starts, at) - 1  # the bar starting at or before it
        if index >= 0 and at < starts[index] + span:
            headlines.setdefault(index, []).append(n["headline"])
    rows = [["start", "interval", "open", "high", "low", "close", "volume",
             *(f"sentiment_{p}" for p in providers), "headlines"]]
    for i, bar in enumerate(page["bars"]):
        rows.append([csv_cell(v) for v in (bar["start"], page["interval"], bar["open"], bar["high"], bar["low"],
                                           bar["close"], bar["volume"], *(means[p].get(bar["start"]) for p in providers),
                                           " | ".join(headlines.get(i, [])))])
    return rows
