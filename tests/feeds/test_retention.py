"""Retention on the database (feeds/retention.py): rows older than each limit go or are rolled up
exactly, newer rows stay, a second run changes nothing, a dry run changes nothing, batches stay
bounded, and the pages still draw the rolled-up bars."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.auth import get_user_model

from dashboard.models import AlertAcknowledgement
from feeds.models import Alert, Bar, CrowdMention, NewsItem, RetentionRun, SentimentSample, WebhookDelivery
from feeds.retention import apply_retention, retention_policy
from feeds.selectors import instrument_detail
from tests.factories import instrument

pytestmark = pytest.mark.django_db
UTC = timezone.utc
NOW = datetime(2026, 3, 2, 10, 17, tzinfo=UTC)
HOURLY_CUTOFF = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)  # NOW - 30 days, down to its hour
H1 = datetime(2026, 1, 30, 14, 0, tzinfo=UTC)
H2 = HOURLY_CUTOFF - timedelta(hours=1)  # the last whole hour before the cutoff
M = timedelta(minutes=1)


def bar(inst, start, o, h, low, c, v, interval="1m", provider="insightsentry") -> Bar:
    return Bar.objects.create(instrument=inst, provider=provider, interval=interval, start=start, open=o, high=h,
                              low=low, close=c, volume=v)


def sample(inst, provider, ts, score, volume, external_id=None, scale="") -> SentimentSample:
    return SentimentSample.objects.create(instrument=inst, provider=provider, ts=ts, score=score, volume=volume,
                                          external_id=external_id or f"{provider}:{ts.isoformat()}", scale=scale)


def mention(inst, created_at, message_id) -> CrowdMention:
    return CrowdMention.objects.create(provider="stocktwits", message_id=message_id, symbol="AAPL", instrument=inst,
                                       created_at=created_at, score=0.5, seq_id="1")


def news(inst, published_at, external_id) -> NewsItem:
    return NewsItem.objects.create(instrument=inst, provider="stocknews", external_id=external_id, headline="h",
                                   published_at=published_at, received_at=published_at)


def alert(inst, triggered_at, external_id, provider="knowsis") -> Alert:
    return Alert.objects.create(instrument=inst, provider=provider, external_id=external_id,
                                triggered_at=triggered_at)


def snapshot() -> dict:
    """Every row of every kind retention touches, as values."""
    return {model.__name__: sorted(map(repr, model.objects.values_list()))
            for model in (Bar, SentimentSample, CrowdMention, NewsItem, Alert, WebhookDelivery)}


def steps(report) -> dict[str, tuple[int, int]]:
    return {f"{s.kind} {s.rule}": (s.deleted, s.created) for s in report.steps}


def hourly_bars(inst, interval="1h") -> list[tuple]:
    return list(Bar.objects.filter(instrument=inst, interval=interval).order_by("start")
                .values_list("start", "open", "high", "low", "close", "volume"))


def test_each_delete_kind_keeps_what_is_newer_than_its_limit():
    aapl = instrument("AAPL")
    week, two_years = NOW - timedelta(days=7), NOW - timedelta(days=730)
    mention(aapl, week - M, "old"), mention(aapl, week + M, "new")
    CrowdMention.objects.create(provider="stocktwits", message_id="old-unlisted", symbol="ZZZ", instrument=None,
                                created_at=week - M, seq_id="2")
    news(aapl, two_years - M, "old"), news(aapl, two_years + M, "new")
    acked = alert(aapl, two_years - M, "old")
    alert(None, two_years - M, "old-team", provider="trendspottr"), alert(aapl, two_years + M, "new")
    AlertAcknowledgement.objects.create(user=get_user_model().objects.create_user("u"), alert=acked)
    for event_id, state, days in (("1", "processed", 91), ("2", "failed", 91), ("3", "ignored", 91),
                                  ("4", "processed", 89)):
        delivery = WebhookDelivery.objects.create(provider="trendspottr", event_id=event_id, payload={}, state=state)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(received_at=NOW - timedelta(days=days))

    report = apply_retention(now=NOW)

    assert report.ok
    assert set(CrowdMention.objects.values_list("message_id", flat=True)) == {"new"}
    assert set(NewsItem.objects.values_list("external_id", flat=True)) == {"new"}
    assert set(Alert.objects.values_list("external_id", flat=True)) == {"new"}
    assert not AlertAcknowledgement.objects.exists()  # went with its alert (the ORM's cascade)
    # A failed delivery waits for a retry or a person, however old.
    assert set(WebhookDelivery.objects.values_list("event_id", flat=True)) == {"2", "4"}
    assert steps(report)["crowd_mentions delete after 7 days"] == (2, 0)


def seed_bars(aapl) -> None:
    for minute in range(60):
        price = 100 + minute % 7 - minute % 3
        bar(aapl, H1 + minute * M, price, price + 1 + minute % 5, price - 1 - minute % 4, price + 0.5,
            None if minute == 30 else 10.0 + minute)
    bar(aapl, H2, 50, 51, 49, 50.5, 1), bar(aapl, H2 + 59 * M, 52, 60, 40, 55, 2)
    bar(aapl, HOURLY_CUTOFF, 70, 71, 69, 70, 5)  # in the hour holding the cutoff: kept as it is
    bar(aapl, NOW - 5 * M, 80, 81, 79, 80, 5)


def test_minute_bars_older_than_the_limit_become_exact_hourly_bars():
    aapl = instrument("AAPL")
    seed_bars(aapl)

    report = apply_retention(now=NOW)

    assert hourly_bars(aapl) == [
        (H1, 100.0, max(101 + m % 7 - m % 3 + m % 5 for m in range(60)),
         min(99 - m % 3 + m % 7 - m % 4 for m in range(60)), 100 + 59 % 7 - 59 % 3 + 0.5,
         sum(10.0 + m for m in range(60) if m != 30)),
        (H2, 50.0, 60.0, 40.0, 55.0, 3.0),
    ]
    assert list(Bar.objects.filter(interval="1m").values_list("start", flat=True).order_by("start")) == [
        HOURLY_CUTOFF, NOW - 5 * M]
    assert steps(report)["bars 1m…30m → 1h after 30 days"] == (62, 2)


def test_sentiment_rolls_up_per_provider_crowd_weighted_knowsis_over_time():
    aapl = instrument("AAPL")
    crowd = "-1..1 mean per minute"
    sample(aapl, "stocktwits", H1, 0.5, 2.0, "crowd:a", crowd)
    sample(aapl, "stocktwits", H1 + M, -1.0, 1.0, "crowd:b", crowd)
    sample(aapl, "stocktwits", H1 + 2 * M, None, 3.0, "crowd:c", crowd)
    sample(aapl, "knowsis", H1, 2.0, 1.0, scale="knowsis")
    sample(aapl, "knowsis", H1 + 15 * M, 4.0, None, scale="knowsis")
    sample(aapl, "knowsis", H1 + 45 * M, None, 3.0, scale="knowsis")
    sample(aapl, "knowsis", HOURLY_CUTOFF + M, 1.0, 1.0, scale="knowsis")  # newer: stays

    apply_retention(now=NOW)

    rows = SentimentSample.objects.order_by("provider", "ts").values_list("provider", "external_id", "ts", "score",
                                                                           "volume", "scale")
    assert list(rows) == [
        ("knowsis", f"rollup:1h:{H1.isoformat()}", H1, 3.5, 1.5, "knowsis"),
        ("knowsis", f"knowsis:{(HOURLY_CUTOFF + M).isoformat()}", HOURLY_CUTOFF + M, 1.0, 1.0, "knowsis"),
        ("stocktwits", f"rollup:1h:{H1.isoformat()}", H1, 0.0, 6.0, "-1..1 mean per hour"),
    ]


def test_a_second_run_changes_nothing():
    aapl = instrument("AAPL")
    seed_bars(aapl)
    sample(aapl, "knowsis", H1, 2.0, 1.0)
    mention(aapl, NOW - timedelta(days=8), "old")
    apply_retention(now=NOW)
    before = snapshot()

    again = apply_retention(now=NOW)

    assert snapshot() == before
    assert all(counts == (0, 0) for counts in steps(again).values())


def test_a_dry_run_counts_what_would_go_and_changes_nothing():
    aapl = instrument("AAPL")
    seed_bars(aapl)
    sample(aapl, "knowsis", H1, 2.0, 1.0)
    mention(aapl, NOW - timedelta(days=8), "old")
    before = snapshot()

    dry = apply_retention(now=NOW, dry_run=True)

    assert snapshot() == before and not RetentionRun.objects.exists()
    assert steps(dry) == steps(apply_retention(now=NOW))
    assert steps(dry)["bars 1m…30m → 1h after 30 days"] == (62, 2)


def test_batches_stay_under_the_limit_and_give_the_same_result():
    policy = dataclasses.replace(retention_policy(), batch_rows=100)
    aapl = instrument("AAPL")
    start = H2 - timedelta(hours=4)
    for minute in range(300):  # 5 whole hours
        bar(aapl, start + minute * M, minute, minute + 2, minute - 2, minute + 1, 1.0)
    for n in range(250):
        mention(aapl, NOW - timedelta(days=8, seconds=n), f"m{n}")

    report = apply_retention(now=NOW, policy=policy)

    by_step = {s.kind: (s.batches, s.deleted) for s in report.steps if s.deleted}
    # A batch stops at the last whole hour its 100 rows reach: 60 rows each.
    assert by_step == {"bars": (5, 300), "crowd_mentions": (3, 250)}
    assert hourly_bars(aapl) == [(start + timedelta(hours=h), 60.0 * h, 60 * h + 61.0, 60 * h - 2.0, 60 * h + 60.0,
                                  60.0) for h in range(5)]


def test_a_period_holding_more_than_a_batch_is_rolled_up_whole():
    policy = dataclasses.replace(retention_policy(), batch_rows=100)
    aapl = instrument("AAPL")
    for n in range(150):  # a datapoint every 24 s: one hour
        sample(aapl, "knowsis", H1 + timedelta(seconds=24 * n), float(n % 2), 1.0)

    report = apply_retention(now=NOW, policy=policy)

    assert list(SentimentSample.objects.values_list("ts", "score", "volume")) == [(H1, 0.5, 1.0)]
    assert steps(report)["sentiment raw → 1h after 30 days"] == (150, 1)


def test_a_year_later_minutes_reach_daily_bars_in_one_run():
    aapl = instrument("AAPL")
    seed_bars(aapl)

    apply_retention(now=NOW + timedelta(days=400))

    day = datetime(2026, 1, 30, tzinfo=UTC)
    [(start, o, h, low, c, v)] = [row for row in hourly_bars(aapl, "1D") if row[0] == day]
    assert (o, c) == (100.0, 100 + 59 % 7 - 59 % 3 + 0.5)
    assert not Bar.objects.filter(interval__in=["1m", "1h"], start__lt=datetime(2026, 2, 1, tzinfo=UTC)).exists()


def test_a_stored_bar_of_the_target_size_is_kept_and_its_minutes_dropped():
    aapl = instrument("AAPL")
    bar(aapl, H1, 1, 2, 0.5, 1.5, 99, interval="1h")  # the provider's own hourly bar
    bar(aapl, H1 + M, 7, 8, 6, 7, 1)

    apply_retention(now=NOW)

    assert hourly_bars(aapl) == [(H1, 1.0, 2.0, 0.5, 1.5, 99.0)]
    assert not Bar.objects.filter(interval="1m").exists()


def test_a_provider_run_touches_only_that_providers_rows():
    aapl = instrument("AAPL")
    seed_bars(aapl)
    sample(aapl, "knowsis", H1, 2.0, 1.0)
    sample(aapl, "stocktwits", H1, 0.5, 2.0, "crowd:a")
    mention(aapl, NOW - timedelta(days=8), "old")

    report = apply_retention(now=NOW, provider="knowsis", origin="worker:knowsis")

    assert set(SentimentSample.objects.values_list("provider", "external_id")) == {
        ("knowsis", f"rollup:1h:{H1.isoformat()}"), ("stocktwits", "crowd:a")}
    assert Bar.objects.filter(interval="1m").count() == 64 and CrowdMention.objects.count() == 1
    run = RetentionRun.objects.get()
    assert (run.origin, run.provider, run.ok, run.summary["provider"]) == ("worker:knowsis", "knowsis", True, "knowsis")
    assert report.ok


def test_the_instrument_page_draws_one_interval_minutes_while_there_are_any():
    aapl, quiet = instrument("AAPL"), instrument("QUIET")
    seed_bars(aapl)
    for minute in range(3):
        bar(quiet, H1 + minute * M, 10, 11, 9, 10, 1)

    apply_retention(now=NOW)

    # Recent minutes exist: the chart shows them and not the older hourly bars (one candle width).
    assert {b["interval"] for b in instrument_detail(instrument_id=aapl.id)["bars"]} == {"1m"}
    # Only rolled-up history left: the chart shows it hourly.
    assert [(b["interval"], b["start"]) for b in instrument_detail(instrument_id=quiet.id)["bars"]] == [
        ("1h", "2026-01-30T14:00:00Z")]


def test_runs_are_recorded_and_only_the_newest_kept():
    RetentionRun.objects.bulk_create([RetentionRun(started_at=NOW - timedelta(days=n), finished_at=NOW,
                                                   origin="old") for n in range(1, 201)])
    apply_retention(now=NOW)

    assert RetentionRun.objects.count() == 200
    newest = RetentionRun.objects.order_by("-started_at").first()
    assert newest.origin == "command" and newest.summary["ok"] is True and len(newest.summary["steps"]) == 9
    assert not RetentionRun.objects.filter(started_at=NOW - timedelta(days=200)).exists()
