"""Pages and the snapshot API: login required, team isolation, strict CSP."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feeds.models import NewsItem
from tests.factories import team_with_watchlist, user

pytestmark = pytest.mark.django_db


@pytest.fixture
def teams():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    beta = team_with_watchlist("Beta", {carol: "viewer"}, ["XOM"])
    return alice, carol, alpha, beta


def test_board_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_snapshot_refuses_anonymous_with_401(client):
    assert client.get("/api/board/").status_code == 401


def test_snapshot_holds_only_the_users_teams_with_latest_news(client, teams):
    alice, carol, alpha, beta = teams
    aapl = alpha.items.get().instrument
    t = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="n1", headline="<script>x</script>",
                            published_at=t, received_at=t, sentiment=75)
    client.force_login(alice)
    snapshot = client.get("/api/board/").json()
    assert [w["id"] for w in snapshot["watchlists"]] == [alpha.id]
    [row] = snapshot["watchlists"][0]["instruments"]
    assert row["symbol"] == "AAPL" and row["quote"] is None
    assert row["news"][0]["external_id"] == "n1" and row["news"][0]["published_at"] == "2026-02-06T12:00:00Z"
    assert snapshot["watchlists"][0]["role"] == "owner"


def test_board_page_sends_a_strict_csp_and_no_inline_script(client, teams):
    client.force_login(teams[0])
    response = client.get("/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.content.decode()
    assert "<script>" not in html and "data-ws-path=\"/ws/stream/\"" in html


def test_logout_is_post_only_and_csrf_protected(teams):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(teams[0])
    assert client.post("/logout/").status_code == 403


def test_health_data_lists_every_account_for_staff_only(client, teams):
    from django.contrib.auth import get_user_model

    from feeds.models import ProviderAccount, WebhookDelivery

    ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example/ws", token="secret-token-1234")
    ProviderAccount.objects.create(provider="trendspottr", endpoint="https://api.example", api_key="k" * 20)
    WebhookDelivery.objects.create(provider="trendspottr", event_id="1", payload={}, state="processed")
    client.force_login(teams[0])
    assert client.get("/api/health/").status_code == 403
    client.force_login(get_user_model().objects.create_user("ops", password="pw-ops-123456", is_staff=True))
    feeds = {f["provider"]: f for f in client.get("/api/health/").json()["feeds"]}
    assert feeds["stocknews"]["state"] == "stopped" and feeds["trendspottr"]["state"] == "webhook"
    assert feeds["trendspottr"]["messages"] == 1
    assert "secret-token-1234" not in client.get("/api/health/").content.decode()


def test_health_data_shows_a_silent_worker_as_stale_without_a_push(client, settings):
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from feeds.models import FeedStatus, ProviderAccount

    settings.FEEDS_HEARTBEAT_STALE_SECONDS = 30
    killed = ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example/ws")
    FeedStatus.objects.create(account=killed, state="connected", heartbeat_at=timezone.now() - timedelta(minutes=2))
    alive = ProviderAccount.objects.create(provider="insightsentry", endpoint="wss://y.example/ws")
    FeedStatus.objects.create(account=alive, state="connected", heartbeat_at=timezone.now())
    client.force_login(get_user_model().objects.create_user("ops", password="pw-ops-123456", is_staff=True))
    data = client.get("/api/health/").json()
    feeds = {f["provider"]: f for f in data["feeds"]}
    assert feeds["stocknews"]["state"] == "stale" and feeds["insightsentry"]["state"] == "connected"
    # The page turns it stale by itself at that time, on the server's clock.
    assert datetime.fromisoformat(feeds["insightsentry"]["stale_after"]) > datetime.fromisoformat(data["server_time"])


def test_acknowledging_an_alert_of_another_team_is_refused(teams):
    from datetime import datetime, timezone

    from django.test import Client

    from dashboard.models import AlertAcknowledgement
    from feeds.models import Alert

    alice, carol, alpha, beta = teams
    t = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    Alert.objects.create(instrument=beta.items.get().instrument, provider="knowsis", external_id="b1", triggered_at=t)
    Alert.objects.create(instrument=alpha.items.get().instrument, provider="knowsis", external_id="a1", triggered_at=t)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/alerts/")
    token = client.cookies["csrftoken"].value
    ack = lambda ext: client.post("/api/alerts/ack/", {"provider": "knowsis", "external_id": ext},  # noqa: E731
                                  content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert ack("b1").status_code == 404
    assert ack("a1").status_code == 200
    assert list(AlertAcknowledgement.objects.values_list("alert__external_id", flat=True)) == ["a1"]
    inbox = client.get("/api/alerts/").json()["alerts"]
    assert [(a["external_id"], a["acknowledged"]) for a in inbox] == [("a1", True)]



def test_snapshot_carries_a_sparkline_of_recent_bar_closes(client, teams):
    from datetime import datetime, timedelta, timezone

    from feeds.models import Bar

    alice, carol, alpha, beta = teams
    aapl = alpha.items.get().instrument
    t = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    for n, close in enumerate([10.0, 11.0, 10.5]):
        Bar.objects.create(instrument=aapl, provider="insightsentry", interval="1m", start=t + timedelta(minutes=n),
                           open=close, high=close, low=close, close=close, volume=1)
    client.force_login(alice)
    [row] = client.get("/api/board/").json()["watchlists"][0]["instruments"]
    assert row["spark"] == [10.0, 11.0, 10.5] and row["bar"]["close"] == 10.5
    assert row["day_range"] == [10.0, 11.0]


def test_snapshot_carries_only_what_the_boards_scripts_read(client, teams):
    """static/dashboard/js/board.js, watchlist-edit.js and alerts.js read these keys and no others."""
    from datetime import timedelta

    from feeds.models import Alert, Bar, Quote, SentimentSample

    alice, carol, alpha, beta = teams
    aapl = alpha.items.get().instrument
    t = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    Quote.objects.create(instrument=aapl, provider="insightsentry", price=10, change=1, change_percent=11.1, bid=9.9,
                         ask=10.1, volume=5, ts=t)
    Bar.objects.create(instrument=aapl, provider="insightsentry", interval="1m", start=t, open=9, high=11, low=8,
                       close=10, volume=3)
    SentimentSample.objects.create(instrument=aapl, provider="stocktwits", external_id="s1", ts=t, score=0.5,
                                   scale="-1..1", volume=4)
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="n1", headline="Up", summary="long",
                            published_at=t, received_at=t + timedelta(seconds=2), key_factors=["x"])
    Alert.objects.create(instrument=aapl, provider="knowsis", external_id="a1", triggered_at=t, level="high",
                         description="long", related_hashtags=["#x"])
    client.force_login(alice)
    snapshot = client.get("/api/board/").json()
    [watchlist] = snapshot["watchlists"]
    [row] = watchlist.pop("instruments")
    assert watchlist == {"id": alpha.id, "name": "Main", "team": {"name": "Alpha"}, "role": "owner"}
    assert set(row) == {"id", "symbol", "name", "exchange", "quote", "bar", "spark", "day_range", "sentiment", "news"}
    assert row["quote"] == {"ts": "2026-02-06T12:00:00Z", "price": 10.0, "change_percent": 11.1, "bid": 9.9,
                            "ask": 10.1, "delay_seconds": 0}
    assert row["bar"] == {"interval": "1m", "start": "2026-02-06T12:00:00Z", "open": 9.0, "high": 11.0, "low": 8.0,
                          "close": 10.0}
    assert row["sentiment"] == {"stocktwits": {"provider": "stocktwits", "ts": "2026-02-06T12:00:00Z", "score": 0.5,
                                               "volume": 4.0}}
    assert row["news"] == [{"external_id": "n1", "headline": "Up", "published_at": "2026-02-06T12:00:00Z",
                            "received_at": "2026-02-06T12:00:02Z", "url": "", "source": "", "sentiment": None,
                            "sentiment_label": "", "confidence": None}]
    assert snapshot["alerts"] == [{"provider": "knowsis", "external_id": "a1", "instrument_id": aapl.id,
                                   "symbol": "AAPL", "triggered_at": "2026-02-06T12:00:00Z", "level": "high",
                                   "headline": "", "url": "", "revoked": False}]
