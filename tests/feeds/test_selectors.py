"""Reads on the market-data side. Feed health as the page shows it: a live state turns `stale` once
its heartbeat is too old. The board's snapshot and the instrument page: the newest rows per
instrument, in a number of queries that does not grow with the instruments."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench.pages import SMALL_HISTORY, seed_market_history
from feeds import events as ev
from feeds.models import Bar, FeedStatus, Instrument, NewsItem, ProviderAccount, SentimentSample
from feeds.selectors import feed_status_list, feed_status_message, instrument_detail, market_snapshot_for_instruments
from tests.factories import instrument

pytestmark = pytest.mark.django_db


def status(provider: str, state: str, *, beat_age: float | None) -> FeedStatus:
    account = ProviderAccount.objects.create(provider=provider, endpoint="wss://feed.example/ws")
    beat = timezone.now() - timedelta(seconds=beat_age) if beat_age is not None else None
    return FeedStatus.objects.create(account=account, state=state, heartbeat_at=beat)


def test_a_live_state_with_an_old_heartbeat_is_stale_and_a_fresh_one_keeps_its_state(settings):
    settings.FEEDS_HEARTBEAT_STALE_SECONDS = 30
    silent = status("stocknews", "connected", beat_age=31)
    alive = status("insightsentry", "connected", beat_age=2)
    retrying = status("stocktwits", "backing_off", beat_age=120)
    rows = {row["provider"]: row for row in feed_status_list()}
    assert rows["stocknews"]["state"] == "stale" and rows["stocknews"]["worker_state"] == "connected"
    assert rows["insightsentry"]["state"] == "connected"
    assert rows["stocktwits"]["state"] == "stale"
    # The page ages rows itself between pushes: it is told when each one turns stale.
    now = timezone.now()
    fresh = feed_status_message(alive, now=now)
    assert fresh["stale_after"] == (alive.heartbeat_at + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    assert feed_status_message(alive, now=alive.heartbeat_at + timedelta(seconds=30))["state"] == "stale"
    assert feed_status_message(silent, now=silent.heartbeat_at + timedelta(seconds=29))["state"] == "connected"
    assert feed_status_message(retrying, now=now)["heartbeat_at"] == retrying.heartbeat_at.isoformat().replace(
        "+00:00", "Z")


@pytest.mark.parametrize("state", ["stopped", "disabled", "auth_failed", "refused"])
def test_a_worker_that_exited_shows_why_not_stale(state):
    row = status("stocknews", state, beat_age=3600)
    message = feed_status_message(row)
    assert message["state"] == state and message["stale_after"] is None


def test_a_row_written_before_heartbeats_ages_from_its_last_write(settings):
    settings.FEEDS_HEARTBEAT_STALE_SECONDS = 30
    row = status("stocknews", "degraded", beat_age=None)
    FeedStatus.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert feed_status_list()[0]["state"] == "stale"


# The board's snapshot and the instrument page: a fixed number of queries, the newest rows per instrument.

T = datetime(2026, 2, 6, 15, 30, tzinfo=dt_timezone.utc)


def snapshot_queries(instruments) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as queries:
        snapshot = market_snapshot_for_instruments(instrument_ids=[i.pk for i in instruments])
    return len(queries), snapshot


def test_the_market_snapshot_runs_five_queries_at_5_and_at_50_instruments():
    instruments = [instrument(f"S{n:02d}") for n in range(50)]
    seed_market_history(instruments=instruments, now=T, history=SMALL_HISTORY)
    few, snapshot = snapshot_queries(instruments[:5])
    many, _ = snapshot_queries(instruments)
    assert few == many == 5
    row = snapshot[instruments[0].pk]
    assert len(row["spark"]) == 60 and len(row["news"]) == 5 and set(row["sentiment"]) == {"stocktwits", "knowsis"}


def test_an_instrument_with_nothing_stored_has_an_empty_row():
    empty = instrument("NONE")
    count, snapshot = snapshot_queries([empty])
    assert snapshot[empty.pk] == {"quote": None, "news": [], "bar": None, "spark": [], "day_range": None,
                                  "sentiment": {}}
    assert count <= 5


def bar(inst, minutes: float, close: float, *, provider="insightsentry", interval="1m") -> Bar:
    return Bar.objects.create(instrument=inst, provider=provider, interval=interval, open=close, high=close + 1,
                              low=close - 1, close=close, start=T + timedelta(minutes=minutes))


def test_the_sparkline_takes_the_newest_60_bars_of_the_newest_bars_interval_and_the_day_range_its_day():
    inst, other = instrument("AAPL"), instrument("MSFT")
    midnight = -(15 * 60 + 30)  # minutes from T back to 00:00 UTC
    for m in range(70):  # 23:00 .. 00:09: the window straddles midnight
        bar(inst, midnight - 60 + m, 100 + m)
    bar(inst, midnight - 5, 1, interval="5m")  # another interval: in the window, not in the line
    for m in range(3):  # another instrument's bars never leak into this one's
        bar(other, m, 500 + m)
    snapshot = market_snapshot_for_instruments(instrument_ids=[inst.pk, other.pk])
    row = snapshot[inst.pk]
    assert row["bar"]["start"] == "2026-02-06T00:09:00Z" and row["bar"]["close"] == 169
    assert row["spark"] == [float(c) for c in range(111, 170)]  # 60 newest, less the 5m bar, oldest first
    assert row["day_range"] == [159.0, 170.0]  # 00:00 .. 00:09 only: closes 160..169, ±1
    assert snapshot[other.pk]["spark"] == [500.0, 501.0, 502.0]


def test_news_are_the_five_newest_and_sentiment_the_latest_per_provider_ties_broken_by_newest_id():
    inst = instrument("AAPL")
    for n in range(8):
        at = T - timedelta(minutes=n // 2)  # pairs share a time
        NewsItem.objects.create(instrument=inst, provider="stocknews", external_id=f"n{n}", headline=str(n),
                                published_at=at, received_at=at)
    for n, (provider, minutes) in enumerate([("knowsis", 10), ("knowsis", 1), ("stocktwits", 1), ("stocktwits", 1)]):
        SentimentSample.objects.create(instrument=inst, provider=provider, external_id=f"s{n}", scale="x", score=n,
                                       ts=T - timedelta(minutes=minutes))
    row = market_snapshot_for_instruments(instrument_ids=[inst.pk])[inst.pk]
    assert [n["external_id"] for n in row["news"]] == ["n1", "n0", "n3", "n2", "n5"]
    assert {p: s["score"] for p, s in row["sentiment"].items()} == {"knowsis": 1, "stocktwits": 3}


def test_the_instrument_page_gets_each_providers_newest_samples_in_a_fixed_number_of_queries():
    inst = instrument("AAPL")
    seed_market_history(instruments=[inst], now=T, history=SMALL_HISTORY)
    for n in range(12):
        SentimentSample.objects.create(instrument=inst, provider="stocknews", external_id=f"x{n}", scale="-100..100",
                                       score=n, ts=T - timedelta(minutes=n))
    with CaptureQueriesContext(connection) as queries:
        detail = instrument_detail(instrument_id=inst.pk, samples=10)
    assert len(queries) == 5
    assert {p: len(rows) for p, rows in detail["sentiment"].items()} == {"stocktwits": 3, "knowsis": 3, "stocknews": 10}
    assert [s["score"] for s in detail["sentiment"]["stocknews"]] == [float(n) for n in range(9, -1, -1)]  # oldest first
    assert len(detail["bars"]) == 70 and detail["bars"][-1]["start"] == "2026-02-06T15:29:00Z"


def test_the_instrument_pages_messages_are_the_live_events_messages():
    """The instrument page builds its messages from rows without building each event: the same."""
    inst = instrument("AAPL", knowsis_channel="aapl-channel")
    b = bar(inst, 0, 10)
    s = SentimentSample.objects.create(instrument=inst, provider="knowsis", external_id="k1", ts=T, score=2,
                                       raw_score="2", scale="knowsis", volume=40)
    detail = instrument_detail(instrument_id=inst.pk)
    assert detail["bars"] == [ev.Bar(
        provider=b.provider, code="NASDAQ:AAPL", received_at=b.start, instrument_id=inst.pk, symbol="AAPL",
        interval="1m", start=b.start, open=10, high=11, low=9, close=10, volume=None).to_message()]
    assert detail["sentiment"] == {"knowsis": [ev.Sentiment(
        provider="knowsis", code="aapl-channel", received_at=s.ts, instrument_id=inst.pk, symbol="AAPL",
        external_id="k1", ts=s.ts, score=2, scale="knowsis", raw_score="2", volume=40).to_message()]}


def test_a_board_of_a_thousand_instruments_is_still_one_query_per_kind():
    Instrument.objects.bulk_create(Instrument(symbol=f"B{n:04d}") for n in range(1100))
    instruments = list(Instrument.objects.all())
    Bar.objects.bulk_create(Bar(instrument=i, provider="insightsentry", interval="1m", start=T, open=1, high=2, low=0,
                                close=1) for i in instruments)
    SentimentSample.objects.bulk_create(SentimentSample(instrument=i, provider="stocktwits", external_id="1", ts=T,
                                                        score=0.5, scale="-1..1") for i in instruments)
    count, snapshot = snapshot_queries(instruments)
    assert count == 5 and len(snapshot) == 1100
    assert all(row["spark"] == [1.0] and row["sentiment"]["stocktwits"]["score"] == 0.5 for row in snapshot.values())


def test_the_health_rows_name_the_lease_holder_first_then_the_live_standbys_not_the_dead(settings):
    """Who holds is the lease row's word, not the role a worker last announced (it lags a takeover)."""
    from feeds.models import FeedLease, FeedWorker

    settings.FEEDS_HEARTBEAT_STALE_SECONDS = 30
    now = timezone.now()
    account = ProviderAccount.objects.create(provider="stocknews", endpoint="ws://x", token="t")
    FeedStatus.objects.create(account=account, state="connected", heartbeat_at=now)
    FeedLease.objects.create(account=account, holder="b:2:bb", token=4, expires_at=now + timedelta(seconds=9))
    for identity, role, age in [("a:1:aa", "holder", 1), ("b:2:bb", "standby", 2), ("c:3:cc", "standby", 3),
                                ("dead:4:dd", "standby", 31)]:
        FeedWorker.objects.create(account=account, identity=identity, role=role, started_at=now - timedelta(hours=1),
                                  heartbeat_at=now - timedelta(seconds=age))
    [row] = feed_status_list(now=now)
    assert [(w["identity"], w["role"]) for w in row["workers"]] == [
        ("b:2:bb", "holder"), ("a:1:aa", "standby"), ("c:3:cc", "standby")]
    FeedLease.objects.update(expires_at=now - timedelta(seconds=1))
    assert {w["role"] for w in feed_status_message(FeedStatus.objects.get(), now=now)["workers"]} == {"standby"}
