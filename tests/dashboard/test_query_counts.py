"""Every page and JSON endpoint runs the same, pinned, number of queries whether the user's
watchlists hold 5 instruments or 50, each with quotes, bars, sentiment, news and alerts stored
(issue 11). bench/pages.py measures the same pages on the same data for time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.pages import PAGES, SMALL_HISTORY, seed_desk

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 2, 6, 15, 30, tzinfo=timezone.utc)
# Per request: the session and the user (2); the pages' context processor reads the preferences (1).
EXPECTED_QUERIES = {
    "board": 3,
    "board snapshot": 11,  # memberships, watchlists, their items with instruments, 5 market, alerts
    "instrument": 5,  # + memberships, the instrument
    "instrument data": 9,  # memberships, the instrument, its codes, bars, sentiment, news, alerts
    "alerts": 3,
    "alerts data": 7,  # memberships, instruments, alerts, acknowledgements, watchlists
    "settings": 4,  # + the preferences the form edits
    "rules": 10,
    "health": 3,
    "health data": 9,  # + the live workers and their leases (feeds.selectors.feed_workers)
    "instrument search": 3,
}


@pytest.fixture
def desks():
    return {size: seed_desk(username=f"desk{size}", instruments=size, now=NOW, history=SMALL_HISTORY)
            for size in (5, 50)}


def query_counts(desk) -> dict[str, int]:
    client = Client()
    client.force_login(desk.user)
    values = {"instrument": desk.instruments[0].pk, "query": desk.instruments[0].symbol[:-2]}
    counts = {}
    for name, path in PAGES:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path.format(**values))
        assert response.status_code == 200, (name, response.status_code)
        counts[name] = len(queries)
    return counts


def test_every_page_runs_the_same_pinned_number_of_queries_at_5_and_50_instruments(desks):
    assert query_counts(desks[5]) == EXPECTED_QUERIES
    assert query_counts(desks[50]) == EXPECTED_QUERIES


def test_the_snapshot_at_50_instruments_holds_each_instruments_latest_values(client, desks):
    desk = desks[50]
    client.force_login(desk.user)
    snapshot = client.get("/api/board/").json()
    rows = {row["id"]: row for wl in snapshot["watchlists"] for row in wl["instruments"]}
    assert set(rows) == {i.pk for i in desk.instruments}
    newest_minute = (NOW - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    for n, inst in enumerate(desk.instruments):
        row, base = rows[inst.pk], 20.0 + 7 * n
        # Two providers quote it: the real-time quote is newer than Knowsis' delayed price.
        assert row["quote"]["price"] == base + 1 and row["quote"]["delay_seconds"] == 0
        assert row["bar"]["start"] == newest_minute and row["bar"]["interval"] == "1m"
        assert len(row["spark"]) == 60 and row["spark"][-1] == row["bar"]["close"]
        assert row["day_range"][0] <= row["bar"]["low"] and row["day_range"][1] >= row["bar"]["high"]
        assert [x["external_id"] for x in row["news"]] == [f"{inst.symbol}-n{i}" for i in (6, 5, 4, 3, 2)]
        assert row["sentiment"]["stocktwits"]["ts"] == newest_minute
        assert row["sentiment"]["knowsis"]["ts"] == (NOW - timedelta(minutes=15)).isoformat().replace("+00:00", "Z")
    # The alerts panel: the newest 30, instruments' and teams' alike, revoked ones marked.
    assert len(snapshot["alerts"]) == 30
    assert [a["triggered_at"] for a in snapshot["alerts"]] == sorted((a["triggered_at"] for a in snapshot["alerts"]),
                                                                     reverse=True)
    assert {a["provider"] for a in snapshot["alerts"]} == {"knowsis", "trendspottr"}
