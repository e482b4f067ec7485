"""Feed health as the page shows it: a live state turns `stale` once its heartbeat is too old."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from feeds.models import FeedStatus, ProviderAccount
from feeds.selectors import feed_status_list, feed_status_message

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
