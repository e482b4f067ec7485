"""Reads on the market-data side, shaped like the live events so the browser has one render path."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connections, models, router
from django.db.models import BooleanField, DateTimeField, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import events as ev

from .models import (
    PROVIDER_CODE_FIELD,
    Alert,
    Bar,
    DeliveryState,
    FeedLease,
    FeedStatus,
    FeedWorker,
    Instrument,
    NewsItem,
    Provider,
    ProviderAccount,
    Quote,
    SentimentSample,
    WebhookDelivery,
)

NEWS_PER_INSTRUMENT = 5
SPARK_BARS = 60
EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
# Keys of the board's snapshot: static/dashboard/js/board.js (and alerts.js) read these and no others.
# Each is a subset of the live event's `to_message()`, same names and formats, so the browser merges
# the snapshot and live events on one path.
BOARD_QUOTE_KEYS = ("ts", "price", "change_percent", "bid", "ask", "delay_seconds")
BOARD_BAR_KEYS = ("interval", "start", "open", "high", "low", "close")
BOARD_SENTIMENT_KEYS = ("provider", "ts", "score", "volume")
BOARD_NEWS_KEYS = ("external_id", "headline", "published_at", "received_at", "url", "source", "sentiment",
                   "sentiment_label", "confidence")
BOARD_ALERT_KEYS = ("provider", "external_id", "instrument_id", "symbol", "triggered_at", "level", "headline", "url",
                    "revoked")
# Every feed that may store sentiment; each keeps its own scale, so each gets its own series.
SENTIMENT_PROVIDERS = tuple(p.value for p in Provider if p != Provider.RULES)
# The board shows two of them (board.js: renderCrowd, renderKnowsis): their latest sample each.
BOARD_SENTIMENT_PROVIDERS = (Provider.STOCKTWITS.value, Provider.KNOWSIS.value)


def _news_message(n: NewsItem) -> dict:
    return ev.News(
        provider=n.provider, code=n.instrument.code_for(n.provider) or n.instrument.symbol, received_at=n.received_at,
        instrument_id=n.instrument_id, symbol=n.instrument.symbol, external_id=n.external_id, headline=n.headline,
        published_at=n.published_at, summary=n.summary, url=n.url, category=n.category, sentiment=n.sentiment,
        raw_sentiment=n.raw_sentiment, sentiment_label=n.sentiment_label, confidence=n.confidence,
        key_factors=tuple(n.key_factors), source=n.source, price=n.price,
    ).to_message()


def _primitive(value):
    return _iso(value) if isinstance(value, datetime) else value


@functools.cache
def _event_fields(kind: type[ev.Event]) -> tuple[tuple[str, object], ...]:
    """(name, default) of each field of the event class, in the order to_message() writes them."""
    def default(f: dataclasses.Field) -> object:
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default
    return tuple((f.name, default(f)) for f in dataclasses.fields(kind))


def _event_message(kind: type[ev.Event], values: dict) -> dict:
    """`kind(**values).to_message()` without building the event (keys of `values` that are not
    its fields are left out): the instrument page and the inbox send hundreds of stored rows, and
    building each event (its checks included) costs more than the rest of the request. The rows
    come from the database, checked when they were stored."""
    message: dict = {"kind": kind.kind}
    for name, default in _event_fields(kind):
        value = values.get(name, default)
        if value is dataclasses.MISSING:
            raise TypeError(f"{kind.__name__} needs {name}")
        message[name] = (_iso(ev.utc(value)) if isinstance(value, datetime)
                         else list(value) if isinstance(value, tuple) else value)
    return message


def _nth_newest(queryset: QuerySet, *, field: str, n: int) -> Coalesce:
    """`field` of the n-th newest row of `queryset`, or the epoch when it holds fewer rows (so
    `field >= this` keeps all of them). An index on (…, -field) answers it reading n entries."""
    nth = queryset.order_by(f"-{field}").values(field)[n - 1:n]
    return Coalesce(Subquery(nth), Value(EPOCH), output_field=DateTimeField())


def _bound_columns(model: type[models.Model], *, field: str, bounds: dict[int, datetime]) -> tuple[str, str, list]:
    """For raw SQL on a per-instrument bound: the quoted instrument and `field` columns of `model`'s
    table, and the parameters of one term per instrument: its id, then its bound, adapted by the
    field as the ORM would. Raw SQL, because Django compiles each Q() term in about 0.1 ms: at 50
    instruments the filter alone would cost more than the query. The columns name their table, so
    this is for top-level queries only."""
    connection = connections[router.db_for_read(model)]
    quote, table, column = connection.ops.quote_name, model._meta.db_table, model._meta.get_field(field)
    params = [p for instrument_id, bound in bounds.items() for p in (instrument_id, column.get_db_prep_value(bound, connection))]
    return f"{quote(table)}.{quote('instrument_id')}", f"{quote(table)}.{quote(column.column)}", params


def _from_bounds(model: type[models.Model], *, field: str, bounds: dict[int, datetime]) -> QuerySet:
    """`model`'s rows from each instrument's bound on: `(instrument_id = i AND field >= bound_i) OR …`,
    which both databases answer with one index range scan per instrument (PostgreSQL: a BitmapOr;
    SQLite: a MULTI-INDEX OR)."""
    if not bounds:
        return model.objects.none()
    instrument, column, params = _bound_columns(model, field=field, bounds=bounds)
    term = f"({instrument} = %s AND {column} >= %s)"
    # In groups of 100: SQLite parses `a OR b OR …` one level deeper per term and refuses more than
    # 1,000 levels; grouped, even a board of thousands of instruments stays far below.
    groups = [" OR ".join([term] * len(chunk)) for chunk in _chunks(list(bounds), 100)]
    return model.objects.filter(RawSQL(" OR ".join(f"({g})" for g in groups), params, output_field=BooleanField()))


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _on_or_after(model: type[models.Model], *, field: str, bounds: dict[int, datetime]) -> RawSQL:
    """A column: 0 where the row's `field` is before its instrument's bound, else 1 (instruments
    without one included), as the database sends it: a plain Field(), so Django adds no converter
    (SQLite has no booleans, and a conversion per row would cost more than the rest of the row)."""
    if not bounds:
        return RawSQL("1", [], output_field=models.Field())
    instrument, column, params = _bound_columns(model, field=field, bounds=bounds)
    whens = " ".join(["WHEN %s THEN %s"] * len(bounds))
    return RawSQL(f"CASE WHEN {column} >= CASE {instrument} {whens} ELSE {column} END THEN 1 ELSE 0 END", params,
                  output_field=models.Field())


def _per_instrument(rows: Iterable[tuple], *, n: int) -> dict[int, list[tuple]]:
    """(instrument id, …) rows, newest first, grouped by instrument and cut to n each (rows tied
    with the n-th newest passed its bound too)."""
    grouped: dict[int, list[tuple]] = {}
    for instrument_id, *values in rows:
        newest = grouped.setdefault(instrument_id, [])
        if len(newest) < n:
            newest.append(values)
    return grouped


def market_snapshot_for_instruments(*, instrument_ids: Iterable[int]) -> dict[int, dict]:
    """What a board row renders, keyed by instrument id: the latest quote (of any provider), the
    newest bar with a sparkline of recent closes and the day's range, the latest sentiment of each
    BOARD_SENTIMENT_PROVIDERS, and the newest news. Only the BOARD_*_KEYS.

    Five queries whatever the number of instruments (tests/dashboard/test_query_counts.py pins it),
    each reading about what it returns however long the stored history. The first asks, for each
    instrument, where its newest SPARK_BARS bars and NEWS_PER_INSTRUMENT news begin and which
    sentiment samples are the latest: correlated subqueries in the select list, each an index probe
    run once per instrument. The others fetch those rows by range or id (see _from_bounds).

    Not a window function (ROW_NUMBER() OVER (PARTITION BY instrument ...)): it reads every stored
    row of every instrument before keeping the newest, so its cost grows with the history kept. Not
    a join whose condition holds the correlated bound (a portable LATERAL): PostgreSQL then often
    plans a hash join that runs the subquery once per stored row. And few timestamps: Django turns
    each into a datetime in Python, and 3,000 of them cost more than every query here together, so
    the bars come without theirs: the newest bar's start is in the bounds, the order and whether a
    bar is on the newest bar's day are worked out by the database.
    """
    ids = set(instrument_ids)
    snapshot: dict[int, dict] = {i: {"quote": None, "news": [], "bar": None, "spark": [], "day_range": None,
                                     "sentiment": {}} for i in ids}
    if not ids:
        return snapshot
    of_instrument = {model: model.objects.filter(instrument_id=OuterRef("pk")) for model in (Bar, NewsItem)}
    newest_samples = {f"sentiment_{p}": Subquery(SentimentSample.objects.filter(instrument_id=OuterRef("pk"), provider=p)
                                                 .order_by("-ts", "-id").values("id")[:1]) for p in BOARD_SENTIMENT_PROVIDERS}
    bounds = {row["pk"]: row for row in Instrument.objects.filter(pk__in=ids).order_by().values(
        "pk", bar_start=Subquery(of_instrument[Bar].order_by("-start").values("start")[:1]),
        bars_from=_nth_newest(of_instrument[Bar], field="start", n=SPARK_BARS),
        news_from=_nth_newest(of_instrument[NewsItem], field="published_at", n=NEWS_PER_INSTRUMENT), **newest_samples)}

    # Several providers may quote one instrument: the most recent quote is shown.
    for quote in Quote.objects.filter(instrument_id__in=ids).order_by("ts", "id").values("instrument_id", *BOARD_QUOTE_KEYS):
        snapshot[quote["instrument_id"]]["quote"] = {key: _primitive(quote[key]) for key in BOARD_QUOTE_KEYS}

    with_bars = {i: b for i, b in bounds.items() if b["bar_start"] is not None}
    # The day's range: the low and high of those bars that fall on the newest bar's (UTC) day. All of
    # them do unless an instrument's newest SPARK_BARS straddle midnight: only those need a bound.
    day_starts = {i: datetime.combine(b["bar_start"].date(), time(), dt_timezone.utc) for i, b in with_bars.items()}
    straddling = {i: start for i, start in day_starts.items() if start > with_bars[i]["bars_from"]}
    # Newest first across instruments, not by instrument: SQLite would then walk the whole index in
    # that order rather than read the ranges.
    bars = (_from_bounds(Bar, field="start", bounds={i: b["bars_from"] for i, b in with_bars.items()})
            .annotate(on_day=_on_or_after(Bar, field="start", bounds=straddling)).order_by("-start", "-id")
            .values_list("instrument_id", "interval", "open", "high", "low", "close", "on_day"))
    for instrument_id, newest in _per_instrument(bars, n=SPARK_BARS).items():
        interval, *ohlc, _ = newest[0]
        snapshot[instrument_id]["bar"] = dict(zip(BOARD_BAR_KEYS, (interval, _iso(with_bars[instrument_id]["bar_start"]), *ohlc)))
        # The sparkline: recent closes of the bars of the newest bar's interval, oldest first.
        snapshot[instrument_id]["spark"] = [close for i, *_, close, _ in reversed(newest) if i == interval]
        day = [(low, high) for *_, high, low, _, on_day in newest if on_day]
        snapshot[instrument_id]["day_range"] = [min(low for low, _ in day), max(high for _, high in day)]

    news = (_from_bounds(NewsItem, field="published_at", bounds={i: b["news_from"] for i, b in bounds.items()})
            .order_by("-published_at", "-id").values_list("instrument_id", *BOARD_NEWS_KEYS))
    for instrument_id, newest in _per_instrument(news, n=NEWS_PER_INSTRUMENT).items():
        snapshot[instrument_id]["news"] = [{key: _primitive(v) for key, v in zip(BOARD_NEWS_KEYS, row)} for row in newest]

    samples = [b[key] for b in bounds.values() for key in newest_samples if b[key] is not None]
    for sample in SentimentSample.objects.filter(pk__in=samples).values("instrument_id", *BOARD_SENTIMENT_KEYS):
        snapshot[sample["instrument_id"]]["sentiment"][sample["provider"]] = {
            key: _primitive(sample[key]) for key in BOARD_SENTIMENT_KEYS}
    return snapshot


ALERT_FIELDS = ("provider", "external_id", "instrument_id", "triggered_at", "level", "headline", "description", "url",
                "audience", "thumbnail_url", "related_hashtags", "notification_id", "revoked_at")


def alert_messages_for(*, instrument_ids: Iterable[int], audiences: Iterable[str], limit: int = 30) -> list[dict]:
    """The newest alerts about these instruments or for these audiences, revoked ones included
    (marked `revoked`), shaped like live alert events. One query."""
    return _alert_messages(
        Alert.objects.filter(Q(instrument_id__in=set(instrument_ids), audience="") | Q(audience__in=set(audiences))),
        limit=limit)


def _alert_messages(alerts: QuerySet, *, limit: int) -> list[dict]:
    """The newest `limit` of `alerts` as live alert events (plus `revoked`). One query."""
    codes = {f"code_{provider}": F(f"instrument__{field}") for provider, field in PROVIDER_CODE_FIELD.items()}
    rows = alerts.order_by("-triggered_at", "-id").values(*ALERT_FIELDS, symbol=F("instrument__symbol"), **codes)[:limit]
    return [
        {**_event_message(ev.Alert, {**a, "code": a.get(f"code_{a['provider']}") or "", "symbol": a["symbol"] or "",
                                     "received_at": a["triggered_at"]}),
         "revoked": a["revoked_at"] is not None}
        for a in rows
    ]


SAMPLE_FIELDS = ("provider", "external_id", "ts", "score", "scale", "raw_score", "volume")


def instrument_detail(*, instrument_id: int, audiences: Iterable[str] = (), bars: int = 390, samples: int = 500,
                      news: int = 50) -> dict:
    """What the instrument page draws: bars (the interval of the newest), each provider's sentiment
    series on its own scale, the latest news, and the alert timeline (revoked ones marked). Five
    queries whatever the data; each reads about what it returns.

    The timeline holds this instrument's provider-wide alerts and those addressed to `audiences`
    (the viewer's teams and the viewer: dashboard.selectors.audiences_for_user), never another
    audience's: the rule feeds.broadcast.event_stream applies to live alerts, so the snapshot and the
    live events agree."""
    instrument = Instrument.objects.filter(pk=instrument_id).values("symbol", *PROVIDER_CODE_FIELD.values()).first()
    if instrument is None:
        return {"bars": [], "sentiment": {}, "news": [], "alerts": []}
    symbol = instrument["symbol"]
    code = {provider: instrument[field] for provider, field in PROVIDER_CODE_FIELD.items()}
    latest_bars = list(Bar.objects.filter(instrument_id=instrument_id).order_by("-start", "-id")
                       .values("provider", "interval", "start", "open", "high", "low", "close", "volume")[:bars])
    interval = latest_bars[0]["interval"] if latest_bars else ""
    # Each provider's newest `samples`, in one query: a bound per provider (the index on
    # (instrument, provider, -ts) answers each), then the rows from there on.
    newest = Q()
    for provider in SENTIMENT_PROVIDERS:
        of_provider = SentimentSample.objects.filter(instrument_id=instrument_id, provider=provider)
        # The instrument inside each term lets SQLite too answer every one with a range of that index.
        newest |= Q(instrument_id=instrument_id, provider=provider, ts__gte=_nth_newest(of_provider, field="ts", n=samples))
    series: dict[str, list[dict]] = {}
    for row in (SentimentSample.objects.filter(newest)
                .order_by("provider", "-ts", "-id").values(*SAMPLE_FIELDS)):
        rows = series.setdefault(row["provider"], [])
        if len(rows) < samples:  # rows tied with the last passed the bound too
            rows.append(row)
    items = NewsItem.objects.filter(instrument_id=instrument_id).select_related("instrument").order_by("-published_at")[:news]
    return {
        "bars": [_event_message(ev.Bar, {**b, "code": code.get(b["provider"], ""), "received_at": b["start"],
                                         "instrument_id": instrument_id, "symbol": symbol})
                 for b in reversed(latest_bars) if b["interval"] == interval],
        "sentiment": {
            provider: [_event_message(ev.Sentiment, {**s, "code": code.get(provider, ""), "received_at": s["ts"],
                                                     "instrument_id": instrument_id, "symbol": symbol})
                       for s in reversed(rows)]
            for provider, rows in series.items()
        },
        "news": [_news_message(n) for n in items],
        "alerts": _alert_messages(Alert.objects.filter(Q(audience="") | Q(audience__in=set(audiences)),
                                                       instrument_id=instrument_id), limit=100),
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


def feed_workers(*, account_ids: Iterable[int] | None = None, now: datetime | None = None) -> dict[int, list[dict]]:
    """The live `runfeed` processes per account (heartbeat within FEEDS_HEARTBEAT_STALE_SECONDS),
    holder first. Who holds is read from the lease row, the authority (feeds/lease.py), not from
    the role a worker last announced. Two queries, whatever the number of accounts."""
    now = now or timezone.now()
    workers = FeedWorker.objects.filter(heartbeat_at__gte=now - timedelta(seconds=settings.FEEDS_HEARTBEAT_STALE_SECONDS))
    leases = FeedLease.objects.filter(expires_at__gt=now)
    if account_ids is not None:
        workers, leases = workers.filter(account_id__in=account_ids), leases.filter(account_id__in=account_ids)
    holders = dict(leases.values_list("account_id", "holder"))
    out: dict[int, list[dict]] = {}
    for worker in workers.order_by("started_at"):
        role = "holder" if holders.get(worker.account_id) == worker.identity else "standby"
        out.setdefault(worker.account_id, []).append({
            "identity": worker.identity, "role": role, "started_at": _iso(worker.started_at),
            "heartbeat_at": _iso(worker.heartbeat_at)})
    for rows in out.values():
        rows.sort(key=lambda w: w["role"] != "holder")
    return out


def feed_status_message(row: FeedStatus, *, now: datetime | None = None, workers: list[dict] | None = None) -> dict:
    """One feed's health as JSON primitives (no credentials: only the provider and state).

    `state` is what to show: the worker's own `worker_state`, or `stale` once `stale_after` has
    passed. The page keeps ageing rows with `stale_after` between pushes. `workers`: the
    processes for this account (feed_workers), read here when not given."""
    stale_after = feed_status_stale_after(row)
    stale = stale_after is not None and (now or timezone.now()) >= stale_after
    if workers is None:
        workers = feed_workers(account_ids=[row.account_id], now=now).get(row.account_id, [])
    return {
        "provider": row.account.provider, "state": "stale" if stale else row.state, "worker_state": row.state,
        "heartbeat_at": _iso(row.heartbeat_at), "stale_after": _iso(stale_after), "messages": row.messages,
        "parse_errors": row.parse_errors, "reconnects": row.reconnects, "last_error": row.last_error,
        "last_message_at": _iso(row.last_message_at), "updated_at": _iso(row.updated_at),
        "cursor": row.details.get("cursor") or row.details.get("last_seq_id"),
        "subscription_expires_at": row.details.get("subscription_expires_at"),
        "invalid_codes": row.details.get("invalid_codes") or {},
        "workers": workers,
    }


def feed_status_list(*, now: datetime | None = None) -> list[dict]:
    """Every provider account, with its status (accounts that never ran show as stopped)."""
    now = now or timezone.now()
    workers = feed_workers(now=now)
    rows = []
    for account in ProviderAccount.objects.order_by("provider").select_related("status"):
        status = getattr(account, "status", None)
        if status is None and account.provider == Provider.TRENDSPOTTR:
            rows.append(_webhook_status(account))
            continue
        rows.append(feed_status_message(status, now=now, workers=workers.get(account.pk, [])) if status else {
            "provider": account.provider, "state": "stopped" if account.enabled else "disabled",
            "worker_state": "stopped" if account.enabled else "disabled", "heartbeat_at": None, "stale_after": None,
            "messages": 0, "parse_errors": 0, "reconnects": 0, "last_error": "", "last_message_at": None, "updated_at": None,
            "cursor": None, "subscription_expires_at": None, "invalid_codes": {},
            "workers": workers.get(account.pk, [])})
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
        "last_message_at": _iso(last.received_at) if last else None, "updated_at": None, "cursor": None,
        "subscription_expires_at": None, "invalid_codes": {}, "workers": [],
    }
