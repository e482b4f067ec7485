"""The instrument page's paged history endpoint (issue 13 item 3): bars rolled up in SQL from the
finest stored size, pages without overlap or gap, the same authorisation as the page, a constant
number of queries, and a CSV export no spreadsheet evaluates."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from feeds.groups import team_audience
from feeds.models import Alert, Bar, NewsItem, SentimentSample
from feeds.retention_policy import bar_rollup, bucket_start, interval_seconds
from tests.factories import team_with_watchlist, user

pytestmark = pytest.mark.django_db
SPANS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
DAY = datetime(2026, 2, 5, tzinfo=timezone.utc)
FAR = "2026-03-01T00:00:00Z"


def _bar(inst, interval: str, start: datetime, n: int) -> Bar:
    # Values that differ bar to bar, so a wrong first/last/min/max shows; whole volumes sum exactly.
    base = 100 + (n * 37 % 23) - (n % 5)
    return Bar(instrument=inst, provider="insightsentry", interval=interval, start=start, open=base + 0.25,
               high=base + 2 + n % 3, low=base - 1 - n % 4, close=base + (n % 7) / 4, volume=10 + n % 9)


@pytest.fixture
def desk():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    beta = team_with_watchlist("Beta", {carol: "owner"}, ["XOM"])
    aapl = alpha.items.get().instrument
    bars = [_bar(aapl, "1m", DAY + timedelta(hours=14, minutes=m), m) for m in range(180)]  # 14:00-17:00
    # The same 14:00 hour kept as its roll-up too (retention mid-run): the minutes must win.
    bars.append(Bar(instrument=aapl, provider="insightsentry", interval="1h", start=DAY + timedelta(hours=14),
                    open=1, high=1, low=1, close=1, volume=1))
    bars += [_bar(aapl, "1h", DAY - timedelta(days=1) + timedelta(hours=h), 300 + h) for h in range(13, 20)]
    bars += [_bar(aapl, "1D", DAY - timedelta(days=d), 400 + d) for d in range(3, 12) if d % 7 not in (0, 1)]
    Bar.objects.bulk_create(bars)
    SentimentSample.objects.bulk_create([
        SentimentSample(instrument=aapl, provider="stocktwits", external_id=f"s{m}", ts=DAY + timedelta(hours=14, minutes=m),
                        score=(m % 11 - 5) / 10, scale="-1..1") for m in range(0, 180, 2)])
    return {"alice": alice, "carol": carol, "aapl": aapl, "alpha": alpha, "beta": beta}


def _expected(inst, interval: str) -> list[dict]:
    """The roll-up worked out in Python from the stored rows: per bucket, the finest size present."""
    span = SPANS[interval]
    buckets: dict[datetime, list] = defaultdict(list)
    for b in Bar.objects.filter(instrument=inst):
        size = interval_seconds(b.interval)
        if size <= span and span % size == 0:
            buckets[bucket_start(b.start, span)].append((size, (b.start, b.open, b.high, b.low, b.close, b.volume)))
    out = []
    for start in sorted(buckets):
        finest = min(size for size, _ in buckets[start])
        o, h, lo, c, v = bar_rollup([row for size, row in buckets[start] if size == finest])
        out.append({"start": start.isoformat().replace("+00:00", "Z"), "open": o, "high": h, "low": lo, "close": c,
                    "volume": v})
    return out


def _get(client, inst, **params):
    return client.get(f"/api/instrument/{inst.pk}/history/", params)


@pytest.mark.parametrize("interval,limit", [("1m", 25), ("5m", 7), ("1h", 2), ("1d", 3)])
def test_pages_roll_up_exactly_and_meet_without_overlap_or_gap(client, desk, interval, limit):
    client.force_login(desk["alice"])
    bars, before, pages = [], FAR, 0
    while before:
        page = _get(client, desk["aapl"], interval=interval, before=before, limit=limit).json()
        assert 0 < len(page["bars"]) <= limit and page["interval"] == interval
        assert not bars or page["bars"][-1]["start"] < bars[0]["start"]  # strictly older: no overlap
        bars, before, pages = page["bars"] + bars, page["next_before"], pages + 1
    expected = _expected(desk["aapl"], interval)
    assert bars == expected  # every bucket once, exact values: no gap either
    assert pages >= len(expected) // limit  # it did page
    if interval == "1h":  # the 14:00 hour from its minutes, not from the stale roll-up row
        hour = next(b for b in bars if b["start"] == "2026-02-05T14:00:00Z")
        assert hour["volume"] == sum(10 + m % 9 for m in range(60)) and hour["open"] != 1


def test_sentiment_is_each_buckets_mean_and_markers_come_from_the_window(client, desk):
    aapl, alpha, beta = desk["aapl"], desk["alpha"], desk["beta"]
    at = DAY + timedelta(hours=16, minutes=50)
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="in", headline="In window",
                            published_at=at, received_at=at, sentiment=40)
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="out", headline="Older",
                            published_at=DAY + timedelta(hours=14),
                            received_at=DAY, sentiment=40)
    for external_id, audience in [("wide", ""), ("ours", team_audience(alpha.team_id)),
                                  ("theirs", team_audience(beta.team_id))]:
        Alert.objects.create(instrument=aapl, provider="rules", external_id=external_id, audience=audience,
                             triggered_at=at, headline=external_id)
    client.force_login(desk["alice"])
    page = _get(client, aapl, interval="5m", before="2026-02-05T17:00:00Z", limit=3).json()
    assert [b["start"] for b in page["bars"]] == ["2026-02-05T16:45:00Z", "2026-02-05T16:50:00Z", "2026-02-05T16:55:00Z"]
    scores = {m: (m % 11 - 5) / 10 for m in range(0, 180, 2)}
    expected = [sum(s) / len(s) for s in ([scores[m] for m in range(k, k + 5) if m in scores] for k in (165, 170, 175))]
    assert [s["score"] for s in page["sentiment"]["stocktwits"]] == pytest.approx(expected)
    assert [n["external_id"] for n in page["news"]] == ["in"]
    assert sorted(a["external_id"] for a in page["alerts"]) == ["ours", "wide"]  # never another team's


def test_history_is_refused_outside_the_users_watchlists_and_to_the_anonymous(client, desk):
    assert _get(client, desk["aapl"], interval="1m").status_code == 401
    client.force_login(desk["carol"])
    assert _get(client, desk["aapl"], interval="1m").status_code == 404
    assert _get(client, desk["aapl"], interval="1m", format="csv").status_code == 404
    client.force_login(desk["alice"])
    for bad in ({"interval": "2m"}, {"interval": "1m", "before": "yesterday"}, {"interval": "1m", "limit": "0"}):
        assert _get(client, desk["aapl"], **bad).status_code == 400


def test_the_number_of_queries_does_not_grow_with_the_page(desk):
    client = Client()
    client.force_login(desk["alice"])
    counts = set()
    for interval, limit in [("1m", 5), ("1m", 180), ("1d", 1), ("1d", 50)]:
        with CaptureQueriesContext(connection) as queries:
            assert _get(client, desk["aapl"], interval=interval, before=FAR, limit=limit).status_code == 200
        counts.add(len(queries))
    # Session, user, memberships, the instrument, where the page starts, bars, sentiment, news, alerts.
    assert counts == {9}


def test_the_csv_export_escapes_formulas_and_names_a_safe_file(client, desk):
    aapl = desk["aapl"]
    aapl.symbol = 'BRK"/B\r\n'
    aapl.save()
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="evil",
                            headline='=HYPERLINK("http://evil.example","click")',
                            published_at=DAY + timedelta(hours=16, minutes=58), received_at=DAY)
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="at", headline="@SUM(1)",
                            published_at=DAY + timedelta(hours=16, minutes=57), received_at=DAY)
    client.force_login(desk["alice"])
    response = _get(client, aapl, interval="1m", before="2026-02-05T17:00:00Z", limit=5, format="csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="BRK__B__-1m-20260205T1700.csv"'
    import csv
    import io

    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["start", "interval", "open", "high", "low", "close", "volume", "sentiment_stocktwits", "headlines"]
    assert [r[0] for r in rows[1:]] == [f"2026-02-05T16:5{m}:00Z" for m in range(5, 10)]
    by_start = {r[0]: r for r in rows[1:]}
    assert by_start["2026-02-05T16:58:00Z"][-1] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert by_start["2026-02-05T16:57:00Z"][-1] == "'@SUM(1)"
    # Numbers stay numbers: a negative sentiment is written as it is.
    assert by_start["2026-02-05T16:56:00Z"][7] == str((176 % 11 - 5) / 10) and by_start["2026-02-05T16:56:00Z"][7] < "0"
