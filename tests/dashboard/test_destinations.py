"""Alert destinations: wire formats, outcomes, who hears of which alert, who may manage them, the
secrets never shown again, and the pipeline sink that only inserts outbox rows."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard.delivery import alert_deliveries_enqueue, alert_deliveries_sink, alert_deliveries_sweep
from dashboard.destinations import alert_destination_create, alert_destination_delete, alert_destinations_for
from dashboard.models import AlertDelivery, AlertDestination, AlertRule, DeliveryKind, Role
from dashboard.senders import (
    AlertMessage, SendResult, outcome_classify, retry_delay, secret_generate, slack_payload, teams_payload,
    webhook_headers,
)
from feeds import events as ev
from feeds.models import Alert
from feeds.store import events_store
from tests.factories import team_with_watchlist, user
from tests.receivers import verify_standard_webhook

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = AlertMessage(kind="fire", provider="trendspottr", external_id="x", symbol="AAPL", level="High",
                       headline="<!channel> [click](javascript:alert(1)) *now*", description="<@U123> & more",
                       url="javascript:alert(1)", triggered_at=NOW)


def test_slack_escapes_provider_strings_and_drops_non_web_links():
    payload = json.dumps(slack_payload(HOSTILE))
    assert "<!channel>" not in payload and "&lt;!channel&gt;" in payload and "<@U123>" not in payload
    assert "javascript:" not in payload.replace("(javascript:alert(1))", "")  # only as escaped headline text
    assert slack_payload(HOSTILE)["text"]


def test_teams_is_an_adaptive_card_with_markdown_escaped():
    payload = teams_payload(HOSTILE)
    [attachment] = payload["attachments"]
    assert payload["type"] == "message" and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    title = attachment["content"]["body"][0]["text"]
    assert r"\[click\]\(javascript:alert\(1\)\)" in title and "actions" not in attachment["content"]


def test_standard_webhook_signature_verifies_with_the_spec_and_not_with_another_secret():
    secret, other = secret_generate(), secret_generate()
    body = b'{"type":"alert.fired"}'
    headers = webhook_headers(msg_id="msg_1", timestamp=int(datetime.now(timezone.utc).timestamp()), body=body,
                              secrets=[secret])
    assert headers["webhook-signature"].startswith("v1,")
    assert verify_standard_webhook(secret=secret, headers=headers, body=body)
    assert not verify_standard_webhook(secret=other, headers=headers, body=body)
    assert not verify_standard_webhook(secret=secret, headers=headers, body=body + b" ")


@pytest.mark.parametrize(("result", "action"), [
    (SendResult(status=200), "delivered"), (SendResult(status=204), "delivered"),
    (SendResult(status=410), "disable"), (SendResult(status=400), "dead"), (SendResult(status=404), "dead"),
    (SendResult(status=408), "retry"), (SendResult(status=429), "retry"), (SendResult(status=500), "retry"),
    (SendResult(status=503), "retry"), (SendResult(error="timed out"), "retry"),
    (SendResult(error="SMTP 550", permanent=True), "dead"),
])
def test_outcomes(result, action):
    assert outcome_classify(result).action == action


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(1)
    delays = [retry_delay(n, rng=rng) for n in range(1, 20)]
    assert 5 <= delays[0] <= 10 and delays[4] > delays[0] and max(delays) <= 3600
    assert outcome_classify(SendResult(status=429, retry_after=120)).not_before == 120


@pytest.fixture
def desk(db):
    owner, viewer = user("olivia"), user("victor")
    watchlist = team_with_watchlist("Alpha", {owner: Role.OWNER, viewer: Role.VIEWER}, ["AAPL"])
    return owner, viewer, watchlist


def knowsis_alert(watchlist, level, external_id="k-1") -> Alert:
    return Alert.objects.create(provider="knowsis", external_id=external_id, level=level,
                                instrument=watchlist.items.get().instrument, triggered_at=NOW)


def test_a_non_owner_cannot_manage_the_teams_destinations(desk):
    owner, viewer, watchlist = desk
    with pytest.raises(PermissionDenied):
        alert_destination_create(by=viewer, team=watchlist.team, kind="email", name="x", target="a@example.com")
    made, _ = alert_destination_create(by=owner, team=watchlist.team, kind="email", name="x", target="a@example.com")
    with pytest.raises(PermissionDenied):
        alert_destination_delete(by=viewer, destination=made)
    personal, _ = alert_destination_create(by=viewer, kind="email", name="mine", target="v@example.com")
    with pytest.raises(PermissionDenied):
        alert_destination_delete(by=owner, destination=personal)


def test_filters_choose_destinations(desk):
    owner, viewer, watchlist = desk
    high, _ = alert_destination_create(by=owner, team=watchlist.team, kind="email", name="h", target="h@example.com",
                                       knowsis_min_credibility="high")
    mine, _ = alert_destination_create(by=viewer, kind="email", name="m", target="m@example.com",
                                       knowsis_min_credibility="unknown", trendspottr_min_level="Extreme")
    assert set(alert_destinations_for(alert=knowsis_alert(watchlist, "high"))) == {high, mine}
    assert set(alert_destinations_for(alert=knowsis_alert(watchlist, "medium", "k-2"))) == {mine}
    trend = Alert.objects.create(provider="trendspottr", external_id="t-1", level="High",
                                 audience=f"team-{watchlist.team_id}", triggered_at=NOW)
    assert alert_destinations_for(alert=trend) == []  # below Extreme; the team's has no TrendSpottr filter
    rule = AlertRule.objects.create(team=watchlist.team, watchlist=watchlist, kind="price_above", threshold=1)
    chosen, _ = alert_destination_create(by=owner, team=watchlist.team, kind="email", name="r",
                                         target="r@example.com", rule_ids=[rule.pk])
    fired = Alert.objects.create(provider="rules", external_id=f"rule-{rule.pk}-1-2", triggered_at=NOW,
                                 audience=f"team-{watchlist.team_id}")
    assert alert_destinations_for(alert=fired) == [chosen]


def test_targets_and_secrets_are_encrypted_and_masked(desk):
    owner, _, watchlist = desk
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
    made, _ = alert_destination_create(by=owner, team=watchlist.team, kind="slack", name="s", target=url)
    hook, secret = alert_destination_create(by=owner, team=watchlist.team, kind="webhook", name="w",
                                            target="https://example.com/hook")
    with connection.cursor() as cursor:
        cursor.execute("SELECT target, secret FROM dashboard_alertdestination")
        stored = " ".join(" ".join(row) for row in cursor.fetchall())
    assert "XXXXSECRETXXXX" not in stored and secret not in stored and secret.startswith("whsec_")
    client = Client()
    client.force_login(owner)
    response = client.get("/api/destinations/")
    listed = response.content.decode()
    assert "XXXXSECRETXXXX" not in listed and secret not in listed
    assert {d["target"] for d in response.json()["destinations"]} == {"https://hooks.slack.com/…", "https://example.com/…"}
    assert "XXXXSECRETXXXX" not in repr(made)


def test_the_views_check_csrf_and_ownership(desk):
    owner, viewer, watchlist = desk
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    body = json.dumps({"kind": "email", "name": "x", "target": "a@example.com", "team": watchlist.team_id})
    assert strict.post("/api/destinations/", body, content_type="application/json").status_code == 403
    as_viewer = Client()
    as_viewer.force_login(viewer)
    assert as_viewer.post("/api/destinations/", body, content_type="application/json").status_code == 403
    as_owner = Client()
    as_owner.force_login(owner)
    created = as_owner.post("/api/destinations/", body, content_type="application/json")
    assert created.status_code == 201
    destination_id = created.json()["destination"]["id"]
    assert as_viewer.post(f"/api/destinations/{destination_id}/delete/").status_code == 403
    assert as_owner.post(f"/api/destinations/{destination_id}/delete/").status_code == 200
    assert not AlertDestination.objects.exists()
    assert 'id="destinations"' in as_owner.get("/settings/").content.decode()


def test_the_sink_only_inserts_and_enqueueing_twice_leaves_one_row(desk):
    owner, _, watchlist = desk
    # Nothing listens on the discard port: a sink that sent would fail or wait.
    alert_destination_create(by=owner, team=watchlist.team, kind="slack", name="s",
                             target="http://127.0.0.1:9/hook", knowsis_min_credibility="unknown")
    instrument = watchlist.items.get().instrument
    event = ev.Alert(provider="knowsis", code="c", received_at=NOW, instrument_id=instrument.pk, symbol="AAPL",
                     external_id="k-9", triggered_at=NOW, level="high")
    new = events_store(events=[event])
    with CaptureQueriesContext(connection) as queries:
        assert alert_deliveries_sink(events=new) == []
    assert all(q["sql"].lstrip().upper().startswith(("SELECT", "INSERT", "SAVEPOINT", "RELEASE"))
               for q in queries.captured_queries)
    alert_deliveries_sink(events=new)
    assert AlertDelivery.objects.filter(kind=DeliveryKind.FIRE).count() == 1
    revoked = events_store(events=[ev.AlertRevoked(provider="knowsis", code="c", received_at=NOW,
                                                   external_id="k-9", revoked_at=NOW)])
    alert_deliveries_sink(events=revoked)
    assert AlertDelivery.objects.filter(kind=DeliveryKind.REVOKE).count() == 1


def test_the_sweep_enqueues_alerts_stored_outside_the_pipeline(desk):
    owner, _, watchlist = desk
    made, _ = alert_destination_create(by=owner, team=watchlist.team, kind="email", name="t", target="t@example.com",
                                       trendspottr_min_level="Elevated")
    now = datetime.now(timezone.utc)
    # As the TrendSpottr webhook stores it (feeds.services, no sinks).
    Alert.objects.create(provider="trendspottr", external_id="t-7", level="High",
                         audience=f"team-{watchlist.team_id}", triggered_at=now)
    older = Alert.objects.create(provider="trendspottr", external_id="t-6", level="High",
                                 audience=f"team-{watchlist.team_id}", triggered_at=made.created_at - timedelta(seconds=5))
    assert alert_deliveries_sweep(now=now + timedelta(seconds=1)) == 1
    assert alert_deliveries_sweep(now=now + timedelta(seconds=2)) == 0
    assert not AlertDelivery.objects.filter(alert=older).exists()  # before the destination existed
    assert alert_deliveries_enqueue(alerts=[], now=now) == 0


def test_the_sweep_reaches_an_alert_behind_more_than_a_page_of_alerts_nobody_receives(desk):
    owner, _, watchlist = desk
    alert_destination_create(by=owner, team=watchlist.team, kind="email", name="t", target="t@example.com",
                             trendspottr_min_level="Elevated")
    now = datetime.now(timezone.utc)
    Alert.objects.bulk_create([Alert(provider="trendspottr", external_id=f"nobody-{n}", level="High",
                                     audience="team-999999", triggered_at=now) for n in range(1001)])
    wanted = Alert.objects.create(provider="trendspottr", external_id="t-8", level="High",
                                  audience=f"team-{watchlist.team_id}", triggered_at=now)
    assert alert_deliveries_sweep(now=now + timedelta(seconds=1)) == 1
    assert AlertDelivery.objects.filter(alert=wanted).count() == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_rule_alert_through_the_configured_pipeline_sinks_is_enqueued():
    from asgiref.sync import sync_to_async

    from feeds.pipeline import Pipeline

    def setup():
        owner = user("olivia")
        watchlist = team_with_watchlist("Alpha", {owner: Role.OWNER}, ["AAPL"])
        rule = AlertRule.objects.create(team=watchlist.team, watchlist=watchlist, kind="change_beyond", threshold=1)
        made, _ = alert_destination_create(by=owner, team=watchlist.team, kind="email", name="r",
                                           target="r@example.com", rule_ids=[rule.pk])
        return watchlist.items.get().instrument, made

    async def no_publish(events):
        return len(list(events))

    instrument, made = await sync_to_async(setup)()
    pipeline = Pipeline(publish=no_publish, provider="test")  # the sinks from settings.FEEDS_EVENT_SINKS
    quote = ev.Quote(provider="insightsentry", code=instrument.insightsentry_code, received_at=NOW, ts=NOW,
                     price=10.0, change_percent=5.0)
    await pipeline.submit([quote])
    runner = asyncio.ensure_future(pipeline.run())
    await asyncio.wait_for(pipeline.wait_idle(), 10)
    runner.cancel()
    rows = await sync_to_async(lambda: list(AlertDelivery.objects.filter(destination=made)))()
    assert len(rows) == 1 and rows[0].kind == DeliveryKind.FIRE
