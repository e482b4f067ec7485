"""Rule alerts' identity (issue 13): two firings within one second with a zero cool-down are two
alerts, stored and published; a replay of the triggering event is neither stored nor published
again. Through the real pipeline (store, rule sink, publish) on PostgreSQL and Redis."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from asgiref.sync import sync_to_async

from dashboard import alert_rules
from dashboard.alert_rules import rule_alert_id
from dashboard.models import AlertRule
from feeds import events as ev
from feeds.groups import audience_group, team_audience
from feeds.models import Alert
from feeds.pipeline import Pipeline
from tests.factories import team_with_watchlist, user
from tests.live import listening

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)


def quote(change_percent: float, at: datetime) -> ev.Quote:
    # As the InsightSentry parser emits it: unresolved (the store maps the code to the instrument).
    return ev.Quote(provider="insightsentry", code="NASDAQ:AAPL", received_at=at, ts=at, price=100.0,
                    change_percent=change_percent)


def _desk():
    alice = user("alice")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    # A team rule with no cool-down: every quote beyond ±3 % fires.
    AlertRule.objects.create(team=alpha.team, watchlist=alpha, kind="change_beyond", threshold=3, cooldown_seconds=0)
    alert_rules._last_price.clear()
    return alpha.team_id


async def _run(pipeline: Pipeline, event: ev.Event) -> None:
    # One batch per event: within a batch the store keeps only an instrument's last quote.
    await pipeline.submit([event])
    await pipeline.process(await pipeline._next_batch())


def test_the_id_names_the_triggering_event_not_the_second_it_fired_in():
    first, second = quote(4.0, T), quote(4.5, T + timedelta(milliseconds=400))
    assert rule_alert_id(rule_id=1, event=first) != rule_alert_id(rule_id=1, event=second)
    replayed = dataclasses.replace(first, received_at=T + timedelta(minutes=5))  # received again, later
    assert rule_alert_id(rule_id=1, event=replayed) == rule_alert_id(rule_id=1, event=first)
    assert rule_alert_id(rule_id=2, event=first) != rule_alert_id(rule_id=1, event=first)
    assert len(rule_alert_id(rule_id=2**31, event=first)) <= 255  # Alert.external_id's length


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_two_firings_within_one_second_are_two_alerts_and_a_replay_adds_none():
    team_id = await sync_to_async(_desk)()
    first, second = quote(4.0, T), quote(-5.0, T + timedelta(milliseconds=400))
    pipeline = Pipeline(max_delay=0.01)  # the settings' sinks: dashboard.alert_rules.alert_rules_evaluate
    async with listening(audience_group(team_audience(team_id))) as team:
        await _run(pipeline, first)
        await _run(pipeline, second)
        published = await team.events(2)
        assert [a["headline"] for a in published] == ["AAPL: change +4.00% beyond ±3%", "AAPL: change -5.00% beyond ±3%"]
        assert len({a["external_id"] for a in published}) == 2
        assert await sync_to_async(Alert.objects.filter(provider="rules").count)() == 2

        # The first quote again (a resent frame, a new lease holder), then a new one. Frames of a
        # stream arrive in publish order, so had the replay been published it would come first.
        await _run(pipeline, dataclasses.replace(first, received_at=T + timedelta(seconds=30)))
        await _run(pipeline, quote(6.0, T + timedelta(seconds=31)))
        [after] = await team.events(1)
    assert after["headline"] == "AAPL: change +6.00% beyond ±3%"
    stored = await sync_to_async(lambda: sorted(Alert.objects.filter(provider="rules").values_list("headline", flat=True)))()
    assert stored == ["AAPL: change +4.00% beyond ±3%", "AAPL: change +6.00% beyond ±3%",
                      "AAPL: change -5.00% beyond ±3%"]
