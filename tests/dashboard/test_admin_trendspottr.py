"""The team lead's TrendSpottr admin against the TrendSpottr simulator: the provider first, the
local record only after OK, errors shown with their code, and delivered alerts reaching the team."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from dashboard.models import Team, TrendAlertDefinition
from feeds.groups import audience_group, team_audience
from feeds.models import Alert, ProviderAccount, WebhookConfig, WebhookDelivery
from feeds.simulators.trendspottr import TrendSpottrSimulator
from tests.live import listening_in_thread
from tests.simthread import simulator_thread

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "ts-api-key-0123456789"
ADD_URL = "/admin/dashboard/trendalertdefinition/add/"
LIST_URL = "/admin/dashboard/trendalertdefinition/"
WEBHOOK_URL = "/admin/dashboard/trendalertdefinition/webhook/"


@pytest.fixture
def sim():
    with simulator_thread(TrendSpottrSimulator([KEY], interval=None, retry_interval=0.2)) as runner:
        ProviderAccount.objects.create(provider="trendspottr", endpoint=runner.simulator.base_url, api_key=KEY)
        yield runner


@pytest.fixture
def lead(client):
    admin = get_user_model().objects.create_superuser("lead", "lead@example.com", "pw-lead-12345")
    client.force_login(admin)
    return client


@pytest.fixture
def team():
    return Team.objects.create(name="Alpha Desk")


def remote_alerts(sim):
    return sim.simulator.accounts[KEY].alerts if KEY in sim.simulator.accounts else {}


def register(lead, base_url="https://desk.example.com"):
    return lead.post(WEBHOOK_URL, {"op": "register", "base_url": base_url}, follow=True)


def create(lead, team, query="AAPL OR Apple", level="All"):
    return lead.post(ADD_URL, {"team": team.pk, "query_string": query, "level_filter": level}, follow=True)


def act(lead, action, alerts):
    return lead.post(LIST_URL, {"action": action, "_selected_action": [a.pk for a in alerts]}, follow=True)


def test_creating_an_alert_without_a_webhook_is_refused_with_a_way_to_fix_it(sim, lead, team):
    page = create(lead, team).content.decode()
    assert "register ours first" in page
    assert TrendAlertDefinition.objects.count() == 0 and remote_alerts(sim) == {}


def test_webhook_registration_stores_no_secret_and_matches_what_the_provider_holds(sim, lead):
    page = register(lead).content.decode()
    config = WebhookConfig.objects.get()
    url, secret = sim.simulator.accounts[KEY].webhook
    assert url == config.public_url and url.startswith("https://desk.example.com/hooks/trendspottr/")
    assert secret not in page and secret not in json.dumps(list(WebhookConfig.objects.values()), default=str)
    check = lead.get(WEBHOOK_URL + "?check=1").content.decode()
    assert "URL matches ours" in check and "secret matches ours" in check
    register(lead)  # re-register rotates the secret and keeps the previous one accepted
    rotated = WebhookConfig.objects.get()
    assert rotated.previous_secret_sha256 == config.secret_sha256 != rotated.secret_sha256


def test_create_pause_level_sync_and_delete_go_to_the_provider_first(sim, lead, team):
    register(lead)
    create(lead, team, level="HighAndExtreme")
    alert = TrendAlertDefinition.objects.get()
    remote = remote_alerts(sim)[int(alert.remote_alert_id)]
    assert (remote.query_string, remote.userid, remote.level_filter) == ("AAPL OR Apple", team_audience(team.pk), "HighAndExtreme")
    act(lead, "action_paused", [alert])
    assert remote.state == "paused" and TrendAlertDefinition.objects.get().state == "paused"
    act(lead, "action_level_set_to_Extreme_only", [alert])
    assert remote.level_filter == "ExtremeOnly" and TrendAlertDefinition.objects.get().level_filter == "ExtremeOnly"
    remote.last_sent_time = 1_700_000_000
    act(lead, "action_synced_from_TrendSpottr", [alert])
    assert TrendAlertDefinition.objects.get().last_sent_time.timestamp() == 1_700_000_000
    act(lead, "action_deleted_at_TrendSpottr_and_here", [alert])
    assert remote_alerts(sim) == {} and TrendAlertDefinition.objects.count() == 0


def test_a_provider_error_is_shown_and_the_local_record_is_left_alone(sim, lead, team):
    register(lead)
    create(lead, team)
    alert = TrendAlertDefinition.objects.get()
    remote_alerts(sim).clear()  # the alert vanished at TrendSpottr
    page = act(lead, "action_paused", [alert]).content.decode()
    assert "TSAPI_UNKNOWN_ALERT" in page
    assert TrendAlertDefinition.objects.get().state == "active"


def test_an_unreachable_provider_is_reported_and_nothing_changes(sim, lead, team):
    register(lead)
    create(lead, team)
    sim.simulator.fail_api_with = 503
    page = act(lead, "action_paused", [TrendAlertDefinition.objects.get()]).content.decode()
    assert "could not be reached or answered badly" in page
    assert TrendAlertDefinition.objects.get().state == "active"
    assert create(lead, team, query="TSLA").status_code == 200 and TrendAlertDefinition.objects.count() == 1


def test_a_duplicate_query_for_the_team_shows_the_provider_code(sim, lead, team):
    register(lead)
    create(lead, team)
    page = create(lead, team).content.decode()
    assert TrendAlertDefinition.objects.count() == 1
    assert "already exists" in page or "TSAPI_DUPLICATE_ALERT" in page


def test_too_many_or_clauses_are_refused_before_any_call(sim, lead, team):
    register(lead)
    calls = len(sim.simulator.calls)
    page = create(lead, team, query=" OR ".join(f"T{i}" for i in range(11))).content.decode()
    assert "OR" in page and TrendAlertDefinition.objects.count() == 0
    assert len(sim.simulator.calls) == calls


def test_delivered_alerts_reach_the_team_and_have_recent_and_analytics_pages(sim, lead, team, live_server):
    register(lead, base_url=live_server.url)
    create(lead, team)
    alert = TrendAlertDefinition.objects.get()
    with listening_in_thread(audience_group(team_audience(team.pk))) as inbox:
        event = sim.call(sim.simulator.deliver_now, int(alert.remote_alert_id))
        [message] = inbox.events(1, timeout=10)
    assert message["kind"] == "alert" and message["headline"] == event["data"]["headline"]
    stored = Alert.objects.get(provider="trendspottr")
    assert stored.audience == team_audience(team.pk) and WebhookDelivery.objects.get().event_id == str(event["event_id"])
    sim.call(sim.simulator.resend, event["event_id"])  # a retried delivery changes nothing
    assert Alert.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    recent = lead.get(f"{LIST_URL}{alert.pk}/recent/").content.decode()
    assert event["data"]["headline"] in recent
    chart = lead.get(f"{LIST_URL}analytics/{stored.notification_id}/").content.decode()
    assert "<polyline" in chart and 'points="' in chart
    preview = lead.get(f"{LIST_URL}preview/?q=AAPL+OR+Apple").content.decode()
    assert event["data"]["headline"] in preview
