"""Alert rules: the pure matcher for every kind, the cool-down, and the pipeline sink that turns
firings into alerts for the rule's team (or user) only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dashboard import alert_rules
from dashboard.alert_rules import RuleSpec, alert_rules_evaluate, cooled_down, rule_fires
from dashboard.models import AlertRule
from feeds import events as ev
from feeds.models import Alert, SentimentSample
from tests.factories import team_with_watchlist, user

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
BASE = dict(provider="insightsentry", code="NASDAQ:AAPL", received_at=T, instrument_id=1, symbol="AAPL")


def quote(price=None, change_percent=None, at=T):
    return ev.Quote(**{**BASE, "received_at": at}, ts=at, price=price, change_percent=change_percent)


def sentiment(score=None, volume=None, provider="knowsis"):
    return ev.Sentiment(**{**BASE, "provider": provider}, external_id="s", ts=T, score=score, scale="knowsis", volume=volume)


@pytest.mark.parametrize("rule,event,kwargs,fires", [
    (RuleSpec("price_above", 100), quote(101), {"previous_price": 99}, True),
    (RuleSpec("price_above", 100), quote(102), {"previous_price": 101}, False),  # already above: no crossing
    (RuleSpec("price_above", 100), quote(101), {}, False),  # nothing before: no crossing
    (RuleSpec("price_below", 100), quote(99), {"previous_price": 100.5}, True),
    (RuleSpec("change_beyond", 3), quote(1, change_percent=-3.5), {}, True),
    (RuleSpec("change_beyond", 3), quote(1, change_percent=2.9), {}, False),
    (RuleSpec("sentiment_above", 1.5, "knowsis"), sentiment(2), {}, True),
    (RuleSpec("sentiment_above", 1.5, "stocktwits"), sentiment(2), {}, False),  # another provider's scale
    (RuleSpec("sentiment_below", -0.5), sentiment(-1), {}, True),
    (RuleSpec("volume_spike", 3), sentiment(volume=9), {"volume_average": 2.5}, True),
    (RuleSpec("volume_spike", 3), sentiment(volume=7), {"volume_average": 2.5}, False),
    (RuleSpec("news_score", 60), ev.News(**{**BASE, "provider": "stocknews"}, external_id="n", headline="Big",
                                         published_at=T, sentiment=-75), {}, True),
])
def test_rule_fires(rule, event, kwargs, fires):
    assert (rule_fires(rule, event, **kwargs) is not None) is fires


def test_cooled_down():
    assert cooled_down(None, T, 300)
    assert not cooled_down(T, T + timedelta(seconds=299), 300)
    assert cooled_down(T, T + timedelta(seconds=300), 300)


@pytest.mark.django_db
def test_a_flapping_price_fires_once_per_cool_down_for_the_rules_team_only():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    team_with_watchlist("Beta", {carol: "owner"}, ["AAPL"])  # the same instrument, another team
    aapl = alpha.items.get().instrument
    rule = AlertRule.objects.create(team=alpha.team, watchlist=alpha, kind="price_above", threshold=100,
                                    cooldown_seconds=300)
    alert_rules._last_price.clear()
    base = {**BASE, "instrument_id": aapl.pk}
    prices = [99, 101, 99, 101, 99, 101]  # flapping around the level, 10 s apart
    fired = []
    for n, price in enumerate(prices):
        at = T + timedelta(seconds=10 * n)
        fired += alert_rules_evaluate(events=[ev.Quote(**{**base, "received_at": at}, ts=at, price=price)])
    assert len(fired) == 1 and fired[0].audience == f"team-{alpha.team_id}"
    later = T + timedelta(seconds=400)
    alert_rules_evaluate(events=[ev.Quote(**{**base, "received_at": later}, ts=later, price=99)])
    fired += alert_rules_evaluate(events=[ev.Quote(**{**base, "received_at": later}, ts=later, price=101)])
    assert len(fired) == 2  # after the cool-down it may fire again
    assert Alert.objects.filter(provider="rules").count() == 2
    from dashboard.selectors import alert_inbox_for_user

    assert len(alert_inbox_for_user(user=alice)["alerts"]) == 2
    assert alert_inbox_for_user(user=carol)["alerts"] == []  # Beta watches AAPL too, but the rule is Alpha's
    rule.refresh_from_db()
    assert str(aapl.pk) in rule.last_fired


@pytest.mark.django_db
def test_a_rule_covers_its_own_instrument_or_else_its_watchlists_and_only_while_enabled():
    alice = user("alice")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL", "MSFT"])
    other = team_with_watchlist("Other", {alice: "viewer"}, ["XOM"])
    aapl, msft = (item.instrument_id for item in alpha.items.order_by("position"))
    xom = other.items.get().instrument_id
    on_list = AlertRule.objects.create(team=alpha.team, watchlist=alpha, kind="price_above", threshold=1)
    on_one = AlertRule.objects.create(team=alpha.team, watchlist=alpha, instrument_id=xom, kind="price_below",
                                      threshold=1)  # its instrument decides, not its list
    AlertRule.objects.create(team=alpha.team, instrument_id=aapl, kind="price_above", threshold=2, enabled=False)
    rules = alert_rules._rules_for({aapl, msft, xom, 999_999})
    assert {i: [r.pk for r in found] for i, found in rules.items()} == {
        aapl: [on_list.pk], msft: [on_list.pk], xom: [on_one.pk], 999_999: []}


@pytest.mark.django_db
def test_a_volume_spike_is_measured_against_the_stored_recent_average():
    alice = user("alice")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    aapl = alpha.items.get().instrument
    AlertRule.objects.create(team=alpha.team, owner=alice, instrument=aapl, kind="volume_spike", threshold=3)
    for n in range(5):
        SentimentSample.objects.create(instrument=aapl, provider="knowsis", external_id=f"old{n}", ts=T, volume=2)
    spike = ev.Sentiment(**{**BASE, "provider": "knowsis", "instrument_id": aapl.pk}, external_id="new", ts=T,
                         score=1, scale="knowsis", volume=7)
    [alert] = alert_rules_evaluate(events=[spike])
    assert alert.audience == f"user-{alice.pk}" and "3.5×" in alert.headline


@pytest.mark.django_db
def test_the_rules_page_lets_a_viewer_keep_personal_rules_but_not_team_rules(client):
    viewer = user("vi")
    watchlist = team_with_watchlist("Alpha", {viewer: "viewer"}, ["AAPL"])
    client.force_login(viewer)
    form = {"scope": f"w{watchlist.pk}", "kind": "news_score", "threshold": "60", "provider": "", "cooldown_seconds": "300"}
    page = client.post("/rules/", form).content.decode()
    assert "Team rules are for the team" in page and AlertRule.objects.count() == 0
    assert client.post("/rules/", {**form, "personal": "on"}).status_code == 302
    rule = AlertRule.objects.get()
    assert rule.owner == viewer and rule.watchlist == watchlist
    other = team_with_watchlist("Beta", {user("x"): "owner"}, ["XOM"])
    page = client.post("/rules/", {**form, "personal": "on", "scope": f"w{other.pk}"}).content.decode()
    assert AlertRule.objects.count() == 1 and "Select a valid choice" in page  # another team's watchlist
