"""The batched database work of retention (feeds/retention.py runs it): deletes, roll-ups, dry-run counts.

Bounded: every transaction handles at most `batch` rows (one period more for a roll-up whose single
period holds more), so it holds row locks on old rows for milliseconds and never on the rows the feed
workers write. Work is found per instrument through the indexes the reads already use ((instrument,
created_at) on mentions, (instrument, provider, -ts) on sentiment, the bars' unique key, (instrument,
-published_at) on news): the hot tables get no index of their own for retention, which every insert
would pay for. Alerts and webhook deliveries, which may have no instrument, are found by (provider,
time) (migration 0009).

Idempotent: a roll-up writes its periods and deletes exactly the rows it read, in one transaction; whole
periods only (the plan aligns the cutoff), so a second run finds nothing. A period already stored at the
target size (the provider's own bar, or an earlier roll-up) is kept as it is.

Concurrent runs are safe (each statement is), and do not duplicate work: each batch first takes a
transaction-level advisory lock for its step and provider on PostgreSQL (transaction-level, so it works
through PgBouncer's transaction pooling and cannot outlive a dead connection); a run that finds it taken
leaves that part to the other run and counts it `busy`. SQLite takes the write lock at BEGIN
(transaction_mode IMMEDIATE), which serialises batches the same way.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Trunc

from .models import (
    Alert,
    Bar,
    CrowdMention,
    DeliveryState,
    Instrument,
    NewsItem,
    Provider,
    SentimentSample,
    WebhookDelivery,
)
from .retention_policy import (
    COUNTED_VOLUME_PROVIDERS,
    ROLLUP_PREFIX,
    DeleteStep,
    RollupStep,
    bar_rollup,
    bucket_start,
    rolled_scale,
    sentiment_external_id,
    sentiment_rollup,
)

__all__ = ["step_count", "step_delete", "step_roll_up"]

LOCK_CLASS = 0x74777274  # "twrt": the advisory-lock namespace of retention (int4, first argument)
FEED_PROVIDERS = tuple(p.value for p in Provider if p != Provider.RULES)
PER_INSTRUMENT = {"crowd_mentions": (CrowdMention, "created_at"), "news": (NewsItem, "published_at")}


def advisory_lock_id(key: str) -> tuple[int, int]:
    """The two int4 of PostgreSQL's advisory lock for a part of a step: "news:*:7" (news of instrument 7,
    every provider), "alerts:knowsis", "bars:1h:insightsentry:7"."""
    objid = zlib.crc32(key.encode())
    return LOCK_CLASS, objid - (1 << 32) if objid >= 1 << 31 else objid


def _locked(key: str) -> bool:
    """Inside a transaction: take this part's advisory lock if it is free (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", advisory_lock_id(key))
        return cursor.fetchone()[0]


# -- deletes ------------------------------------------------------------------------------------

def _delete_targets(step: DeleteStep, provider: str | None) -> list[tuple[str, models.QuerySet, str]]:
    """(lock key, rows, time field) per part of a delete step. Mentions and news go per instrument (their
    indexes lead with it); alerts and deliveries per provider (their (provider, time) indexes). A lock
    per part: a run that finds one taken knows the other run is doing that very part."""
    own = {"provider": provider} if provider else {}
    if step.kind in PER_INSTRUMENT:
        model, field_name = PER_INSTRUMENT[step.kind]
        old = model.objects.filter(instrument_id=OuterRef("pk"), **own, **{f"{field_name}__lt": step.cutoff})
        ids = Instrument.objects.filter(Exists(old)).order_by("pk").values_list("pk", flat=True)
        parts = [(pk, model.objects.filter(instrument_id=pk, **own)) for pk in ids]
        if step.kind == "crowd_mentions":  # mentions of symbols we do not list are stored too
            parts.append((None, model.objects.filter(instrument__isnull=True, **own)))
        return [(f"{step.kind}:{provider or '*'}:{pk}", rows, field_name) for pk, rows in parts]
    providers = [provider] if provider else [p.value for p in Provider]
    if step.kind == "alerts":
        return [(f"alerts:{p}", Alert.objects.filter(provider=p), "triggered_at") for p in providers]
    done = [DeliveryState.PROCESSED, DeliveryState.IGNORED]  # failed ones wait for a retry or a person
    return [(f"webhook_deliveries:{p}", WebhookDelivery.objects.filter(provider=p, state__in=done), "received_at")
            for p in providers]


def step_delete(step: DeleteStep, provider: str | None, result, *, batch: int,
                should_stop: Callable[[], bool]) -> None:
    """Delete the step's rows older than its cutoff, `batch` at a time, part by part."""
    for key, rows, field_name in _delete_targets(step, provider):
        old = rows.filter(**{f"{field_name}__lt": step.cutoff}).order_by(field_name)
        while not should_stop():
            with transaction.atomic():
                if not _locked(key):
                    result.busy += 1
                    break
                # Through the ORM, not raw SQL: Django cascades to whatever refers to these rows
                # (dashboard's alert acknowledgements), which feeds does not know about.
                _, per_model = rows.model.objects.filter(pk__in=Subquery(old.values("pk")[:batch])).delete()
            deleted = per_model.get(rows.model._meta.label, 0)
            result.deleted += deleted
            result.batches += 1 if deleted else 0
            if deleted < batch:
                break


# -- roll-ups -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Series:
    """How one kind's rows are read, rolled up and written."""

    model: type[models.Model]
    time: str
    fields: tuple[str, ...]  # read after pk and time

    def source_filters(self, step: RollupStep) -> dict[str, Q]:
        if self.model is Bar:
            return {source: Q(interval=source) for source in step.sources}
        return {source: (~Q(external_id__startswith=ROLLUP_PREFIX) if source == "raw"
                         else Q(external_id__startswith=f"{ROLLUP_PREFIX}{source}:")) for source in step.sources}


BARS = _Series(Bar, "start", ("open", "high", "low", "close", "volume"))
SENTIMENT = _Series(SentimentSample, "ts", ("score", "volume", "scale"))


def step_roll_up(step: RollupStep, provider: str | None, result, *, batch: int,
                 should_stop: Callable[[], bool]) -> None:
    """Roll the step's source rows older than its cutoff up to its target size, instrument by instrument."""
    series = BARS if step.kind == "bars" else SENTIMENT
    for feed in [provider] if provider else FEED_PROVIDERS:
        for instrument_id, sources in _pending(series, step, feed).items():
            if should_stop():
                return
            _roll_up_instrument(series, step, feed, instrument_id, sources, result, batch=batch,
                                should_stop=should_stop)


def _pending(series: _Series, step: RollupStep, provider: str) -> dict[int, dict[str, Q]]:
    """Per instrument, the sources with rows to roll up, in one query: an index probe per
    instrument and source."""
    filters = series.source_filters(step)
    mine = series.model.objects.filter(instrument_id=OuterRef("pk"), provider=provider,
                                       **{f"{series.time}__lt": step.cutoff})
    if series.model is Bar:
        probes = {f"s{n}": Exists(mine.filter(filters[s])) for n, s in enumerate(filters)}
        rows = Instrument.objects.order_by("pk").annotate(**probes).values_list("pk", *probes)
        return {pk: {s: filters[s] for s, hit in zip(filters, hits) if hit} for pk, *hits in rows if any(hits)}
    # Sentiment rows of every granularity share one index, the oldest being roll-ups kept for long:
    # "any raw row older than the cutoff" would walk past all of them. The newest row older than the
    # cutoff is one probe, and tells: rows are rolled up oldest first, so if it is a source row there
    # is work, and if it is of the target size or coarser, everything before it is done.
    [source] = step.sources
    newest = Subquery(mine.order_by(f"-{series.time}").values("external_id")[:1])
    rows = Instrument.objects.order_by("pk").annotate(newest=newest).values_list("pk", "newest")
    prefix = ROLLUP_PREFIX if source == "raw" else f"{ROLLUP_PREFIX}{source}:"
    return {pk: filters for pk, external_id in rows
            if external_id is not None and (external_id.startswith(prefix) != (source == "raw"))}


def _sentiment_floor(step: RollupStep, provider: str, instrument_id: int) -> datetime | None:
    """Where a sentiment roll-up resumes: the newest row of the target size or coarser older than the
    cutoff (None: from the oldest row). Read backwards from the cutoff, so it costs the rows still to
    roll up, not the history before them."""
    coarser = ("1h", "1D") if step.target == "1h" else ("1D",)
    done = Q()
    for size in coarser:
        done |= Q(external_id__startswith=f"{ROLLUP_PREFIX}{size}:")
    return (SentimentSample.objects.filter(done, instrument_id=instrument_id, provider=provider, ts__lt=step.cutoff)
            .order_by("-ts").values_list("ts", flat=True).first())


def _roll_up_instrument(series: _Series, step: RollupStep, provider: str, instrument_id: int,
                        sources: dict[str, Q], result, *, batch: int,
                        should_stop: Callable[[], bool]) -> None:
    key = f"{step.kind}:{step.target}:{provider}:{instrument_id}"
    base = series.model.objects.filter(instrument_id=instrument_id, provider=provider)
    low = _sentiment_floor(step, provider, instrument_id) if series.model is SentimentSample else None
    columns = ("pk", series.time, *series.fields)
    while not should_stop():
        with transaction.atomic():
            if not _locked(key):
                result.busy += 1
                return
            rows, high = _batch(base, series, sources, low=low, cutoff=step.cutoff, span=step.span, batch=batch,
                                columns=columns)
            if not rows:
                return
            created = _write_periods(series, step, provider, instrument_id, rows)
            deleted, _ = series.model.objects.filter(pk__in=[row[0] for row in rows]).delete()
        result.deleted += deleted
        result.created += created
        result.batches += 1
        low = high


def _batch(base: models.QuerySet, series: _Series, sources: dict[str, Q], *, low: datetime | None,
           cutoff: datetime, span: int, batch: int, columns: tuple[str, ...]) -> tuple[list[tuple], datetime]:
    """The next whole periods' source rows from `low` on, at most `batch` per source unless a single
    period holds more; and where the next batch starts."""
    since = {f"{series.time}__gte": low} if low else {}
    old = base.filter(**since, **{f"{series.time}__lt": cutoff}).order_by(series.time)
    # One ordered read per source: each is a range of an index, where a read of all sources at once
    # would sort them all.
    reads = {name: list(old.filter(where).values_list(*columns)[:batch + 1]) for name, where in sources.items()}
    rows = [row for read in reads.values() for row in read]
    if not rows:
        return [], cutoff
    high = cutoff
    for read in reads.values():
        if len(read) > batch:  # this source goes on: stop at the start of its last period read
            high = min(high, bucket_start(read[batch][1], span))
    first_period = bucket_start(min(row[1] for row in rows), span)
    if high <= first_period:  # one period holds more than a batch: take it whole
        high = first_period + timedelta(seconds=span)
        rows = [row for where in sources.values()
                for row in old.filter(where, **{f"{series.time}__lt": high}).values_list(*columns)]
    return [row for row in rows if row[1] < high], high


def _write_periods(series: _Series, step: RollupStep, provider: str, instrument_id: int, rows: list[tuple]) -> int:
    """Write one row per period of `rows` at the target size; a period already stored is kept
    (ON CONFLICT DO NOTHING). Returns how many rows were new."""
    periods: dict[datetime, list[tuple]] = defaultdict(list)
    for row in rows:
        periods[bucket_start(row[1], step.span)].append(row[1:])
    if series.model is Bar:
        new = [Bar(instrument_id=instrument_id, provider=provider, interval=step.target, start=start,
                   **dict(zip(("open", "high", "low", "close", "volume"), bar_rollup(period))))
               for start, period in sorted(periods.items())]
        unique = ("instrument_id", "provider", "interval", "start")
    else:
        counted = provider in COUNTED_VOLUME_PROVIDERS
        new = []
        for start, period in sorted(periods.items()):
            score, volume = sentiment_rollup([p[:3] for p in period], counted=counted,
                                             end=start + timedelta(seconds=step.span))
            scale = max(period, key=lambda p: p[0])[3]  # the newest sample's
            new.append(SentimentSample(instrument_id=instrument_id, provider=provider, ts=start, score=score,
                                       volume=volume, external_id=sentiment_external_id(step.target, start),
                                       scale=rolled_scale(scale, step.target), raw_score=""))
        unique = ("provider", "external_id", "instrument_id")
    before = _existing(series.model, unique, new)
    series.model.objects.bulk_create(new, ignore_conflicts=True)
    return len(new) - before


def _existing(model: type[models.Model], unique: tuple[str, ...], rows: list[models.Model]) -> int:
    """How many of `rows` are stored already (bulk_create with ignore_conflicts does not say)."""
    if not rows:
        return 0
    keys = {tuple(getattr(row, name) for name in unique) for row in rows}
    lookup = {f"{name}__in": {key[i] for key in keys} for i, name in enumerate(unique)}
    return sum(1 for key in model.objects.filter(**lookup).values_list(*unique) if key in keys)


# -- dry run ------------------------------------------------------------------------------------

TRUNC_KIND = {"1m": "minute", "1h": "hour", "1D": "day"}


def step_count(step, provider: str | None, result) -> None:
    """What `step` would do to the data as it stands now (a step fed by an earlier one is counted
    before that one has run)."""
    if isinstance(step, DeleteStep):
        for _, rows, field_name in _delete_targets(step, provider):
            result.deleted += rows.filter(**{f"{field_name}__lt": step.cutoff}).count()
        return
    series = BARS if step.kind == "bars" else SENTIMENT
    where = Q()
    for source_filter in series.source_filters(step).values():
        where |= source_filter
    old = series.model.objects.filter(where, **{f"{series.time}__lt": step.cutoff},
                                      **({"provider": provider} if provider else {}))
    result.deleted = old.count()
    result.created = (old.annotate(period=Trunc(series.time, TRUNC_KIND[step.target], tzinfo=dt_timezone.utc))
                      .values("instrument_id", "provider", "period").distinct().count())
