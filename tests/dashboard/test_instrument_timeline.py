"""The instrument page's alert timeline (issue 13): the instrument's provider-wide alerts plus those
addressed to the viewer's teams and to the viewer, never another team's or user's, in the snapshot
(the detail endpoint) and live (the page's socket), in both directions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from feeds import events as ev
from feeds.broadcast import publish_events
from feeds.groups import audience_group, instrument_group, team_audience, user_audience
from feeds.models import Alert
from project.asgi import application
from tests.factories import team_with_watchlist, user

T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)


def _desks():
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner", bob: "viewer"}, ["AAPL", "MSFT"])
    beta = team_with_watchlist("Beta", {carol: "owner"}, ["AAPL"])  # the same instrument, another team
    aapl = alpha.items.get(instrument__symbol="AAPL").instrument
    msft = alpha.items.get(instrument__symbol="MSFT").instrument
    audiences = {"alpha": team_audience(alpha.team_id), "beta": team_audience(beta.team_id),
                 "alice": user_audience(alice.pk), "bob": user_audience(bob.pk), "carol": user_audience(carol.pk)}
    for n, (external_id, instrument, audience) in enumerate([
        ("provider-wide", aapl, ""), ("alpha-team", aapl, audiences["alpha"]), ("alice-own", aapl, audiences["alice"]),
        ("bob-own", aapl, audiences["bob"]), ("beta-team", aapl, audiences["beta"]),
        ("carol-own", aapl, audiences["carol"]), ("alpha-team-msft", msft, audiences["alpha"]),
    ]):
        Alert.objects.create(instrument=instrument, provider="rules", external_id=external_id, audience=audience,
                             triggered_at=T + timedelta(minutes=n), headline=external_id)
    return {"alice": alice, "carol": carol, "aapl": aapl, "audiences": audiences}


def _timeline(who, instrument) -> list[str]:
    client = Client()
    client.force_login(who)
    response = client.get(f"/api/instrument/{instrument.pk}/")
    assert response.status_code == 200
    return [a["external_id"] for a in response.json()["alerts"]]


@pytest.mark.django_db
def test_the_timeline_holds_provider_wide_team_and_own_alerts_and_no_one_elses():
    desk = _desks()
    # Newest first; this instrument's only (Alpha's MSFT alert is not AAPL's).
    assert _timeline(desk["alice"], desk["aapl"]) == ["alice-own", "alpha-team", "provider-wide"]
    # The other direction: Beta's member sees Beta's and her own, none of Alpha's or its members'.
    assert _timeline(desk["carol"], desk["aapl"]) == ["carol-own", "beta-team", "provider-wide"]


@pytest.mark.django_db
def test_the_timeline_of_an_instrument_not_on_the_users_watchlists_is_refused(client):
    desk = _desks()
    client.force_login(desk["carol"])
    msft = desk["aapl"].watchlist_items.first().watchlist.items.get(instrument__symbol="MSFT").instrument
    assert client.get(f"/api/instrument/{msft.pk}/").status_code == 404


def _alert(instrument, external_id: str, audience: str) -> ev.Alert:
    return ev.Alert(provider="rules", code="", received_at=T, instrument_id=instrument.pk, symbol=instrument.symbol,
                    external_id=external_id, triggered_at=T, level="rule", headline=external_id, audience=audience)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_pages_socket_receives_the_users_audiences_alerts_live_and_no_one_elses():
    desk = await sync_to_async(_desks)()
    aapl, audiences = desk["aapl"], desk["audiences"]
    session = await sync_to_async(lambda: (c := Client(), c.force_login(desk["alice"]))[0].cookies)()
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"),
               (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session[settings.SESSION_COOKIE_NAME].value}".encode())]
    socket = WebsocketCommunicator(application, "/ws/stream/", headers=headers)
    assert (await socket.connect(timeout=5))[0]
    # The watch request static/dashboard/js/instrument.js sends.
    await socket.send_json_to({"type": "watch", "instruments": [aapl.pk]})
    watching = await socket.receive_json_from(timeout=5)
    assert sorted(watching["streams"]) == sorted([instrument_group(aapl.pk), audience_group(audiences["alpha"]),
                                                  audience_group(audiences["alice"])])
    # Others' alerts first: had one leaked, it would arrive before the user's own.
    await publish_events([_alert(aapl, "beta-live", audiences["beta"]), _alert(aapl, "carol-live", audiences["carol"]),
                          _alert(aapl, "bob-live", audiences["bob"]), _alert(aapl, "team-live", audiences["alpha"]),
                          _alert(aapl, "own-live", audiences["alice"]), _alert(aapl, "wide-live", "")])
    received = [(await socket.receive_json_from(timeout=5))["event"]["external_id"] for _ in range(3)]
    assert sorted(received) == ["own-live", "team-live", "wide-live"]
    await socket.disconnect()
