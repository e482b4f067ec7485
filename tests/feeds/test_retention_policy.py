"""The retention policy, its plan and the roll-up maths, without a database (feeds/retention_policy.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from feeds.retention_policy import (
    DEFAULT_DAYS,
    PolicyError,
    bar_rollup,
    bucket_start,
    interval_seconds,
    policy_from_settings,
    retention_plan,
    rolled_scale,
    sentiment_rollup,
)

NOW = datetime(2026, 3, 2, 10, 17, 42, tzinfo=timezone.utc)
H = datetime(2026, 1, 30, 14, 0, tzinfo=timezone.utc)


def plan(**overrides) -> dict[str, object]:
    return {f"{s.kind} {s.label}": s.cutoff for s in retention_plan(policy_from_settings(overrides), now=NOW)}


def test_the_default_plan_and_its_cutoffs():
    """Deletes cut at now - age; roll-ups at the start of the period holding it, so only whole periods go."""
    assert plan() == {
        "crowd_mentions delete after 7 days": NOW - timedelta(days=7),
        "news delete after 730 days": NOW - timedelta(days=730),
        "alerts delete after 730 days": NOW - timedelta(days=730),
        "webhook_deliveries delete after 90 days": NOW - timedelta(days=90),
        "bars 1s → 1m after 7 days": datetime(2026, 2, 23, 10, 17, tzinfo=timezone.utc),
        "bars 1m…30m → 1h after 30 days": datetime(2026, 1, 31, 10, 0, tzinfo=timezone.utc),
        "bars 1h…12h → 1D after 365 days": datetime(2025, 3, 2, tzinfo=timezone.utc),
        "sentiment raw → 1h after 30 days": datetime(2026, 1, 31, 10, 0, tzinfo=timezone.utc),
        "sentiment 1h → 1D after 365 days": datetime(2025, 3, 2, tzinfo=timezone.utc),
    }


def test_zero_keeps_a_kind_for_ever_and_ages_come_from_the_settings():
    steps = plan(RETENTION_NEWS_DAYS="0", RETENTION_CROWD_MENTION_DAYS="2.5", RETENTION_HOUR_BARS_DAYS=0)
    assert not any(label.startswith("news") for label in steps)
    assert not any("→ 1D" in label and label.startswith("bars") for label in steps)
    assert steps["crowd_mentions delete after 2.5 days"] == NOW - timedelta(days=2.5)


@pytest.mark.parametrize("overrides, message", [
    ({"RETENTION_NEWS_DAYS": "soon"}, "RETENTION_NEWS_DAYS must be a number"),
    ({"RETENTION_ALERT_DAYS": "-1"}, "≥ 0"),
    # hour bars would become daily before the minute bars became hourly: the new hourly rows would
    # find their day taken
    ({"RETENTION_HOUR_BARS_DAYS": "10"}, "comes before"),
    ({"RETENTION_SENTIMENT_DAILY_AFTER_DAYS": "20"}, "comes before"),
    ({"RETENTION_BATCH_ROWS": 10}, "at least 100"),
])
def test_a_malformed_policy_is_refused(overrides, message):
    with pytest.raises(PolicyError, match=message):
        policy_from_settings(overrides)


def test_every_default_is_described_with_its_setting():
    described = policy_from_settings({}).describe()
    assert {row["setting"] for row in described} == set(DEFAULT_DAYS)
    assert all(row["what"] and row["rule"] for row in described)


def test_periods_align_to_utc_multiples():
    moment = datetime(2026, 1, 30, 14, 59, 59, 999999, tzinfo=timezone.utc)
    assert bucket_start(moment, 3600) == H
    assert bucket_start(moment, 86400) == datetime(2026, 1, 30, tzinfo=timezone.utc)
    assert bucket_start(H, 3600) == H
    assert [interval_seconds(i) for i in ("1s", "15m", "1h", "1D", "1W", "0m", "x")] == [1, 900, 3600, 86400,
                                                                                          None, None, None]


def test_bar_rollup_is_first_open_max_high_min_low_last_close_summed_volume():
    rows = [(H + timedelta(minutes=2), 10.5, 11.0, 10.1, 10.9, None),  # given out of order
            (H, 10.0, 10.6, 9.8, 10.4, 100.0),
            (H + timedelta(minutes=1), 10.4, 12.0, 10.2, 10.5, 50.0)]
    assert bar_rollup(rows) == (10.0, 12.0, 9.8, 10.9, 150.0)
    assert bar_rollup([(H, 1.0, 2.0, 0.5, 1.5, None)]) == (1.0, 2.0, 0.5, 1.5, None)


def test_crowd_sentiment_is_message_weighted_and_volume_summed():
    """A crowd minute is a mean over its messages: the hour's mean is over all of them."""
    rows = [(H, 0.5, 2.0), (H + timedelta(minutes=1), -1.0, 1.0), (H + timedelta(minutes=2), None, 3.0)]
    assert sentiment_rollup(rows, counted=True, end=H + timedelta(hours=1)) == (0.0, 6.0)


def test_knowsis_sentiment_is_time_weighted_per_field():
    """A datapoint holds until the next one carrying that field: score 2 for 15 min then 4 for 45 min;
    volume 1.0 for 45 min then 3.0 for 15 min."""
    rows = [(H, 2.0, 1.0), (H + timedelta(minutes=15), 4.0, None), (H + timedelta(minutes=45), None, 3.0)]
    assert sentiment_rollup(rows, counted=False, end=H + timedelta(hours=1)) == (3.5, 1.5)
    assert sentiment_rollup([(H, None, None)], counted=False, end=H + timedelta(hours=1)) == (None, None)


def test_a_period_named_in_the_scale_follows_the_roll_up():
    assert rolled_scale("-1..1 mean per minute", "1h") == "-1..1 mean per hour"
    assert rolled_scale("-1..1 mean per hour", "1D") == "-1..1 mean per day"
    assert rolled_scale("knowsis", "1h") == "knowsis"
