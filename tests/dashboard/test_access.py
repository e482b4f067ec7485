"""Access follows membership within 1 s (issue 10.1), on the real Redis layer and PostgreSQL.

Each path (remove a member, lower a role, deactivate, log out, change a password) goes through
the real service, view or admin page while sockets are open; within a second the socket is told
(a `revoked` frame, or an `access_ended` frame and a 44xx close). Then, sentinel order: an event
for what was lost is published before one for what is still allowed, so a leak would arrive first.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client

from dashboard.consumers import CLOSE_DEACTIVATED, CLOSE_SESSION_ENDED
from dashboard.models import Membership, Role, Team
from dashboard.selectors import session_digest
from dashboard.services import membership_remove, membership_role_set
from feeds import events as ev
from feeds.broadcast import publish_events, publish_revoke
from feeds.groups import team_audience
from project.asgi import application
from tests.factories import team_with_watchlist, user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
T = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
WITHIN = 1.0  # seconds: the promise under test
PASSWORD = "pw-for-tests-only-123"


def _setup(*, staff: bool = False):
    """alice: editor of Alpha (AAPL), viewer of Gamma (MSFT); lead owns both teams."""
    alice = user("alice")
    if staff:
        alice.is_staff = alice.is_superuser = True
        alice.save()
    # No password to hash (the admin pages here are reached with force_login): keeps the tests fast.
    lead = get_user_model().objects.create_user("lead", is_staff=True, is_superuser=True)
    alpha = team_with_watchlist("Alpha", {alice: Role.EDITOR, lead: Role.OWNER}, ["AAPL"])
    gamma = team_with_watchlist("Gamma", {alice: Role.VIEWER, lead: Role.OWNER}, ["MSFT"])
    return alice, lead, alpha, gamma


def logged_in(someone) -> Client:
    client = Client()
    client.force_login(someone)
    return client


async def open_socket(client: Client, watchlists: list[int]) -> WebsocketCommunicator:
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie.encode())])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.send_json_to({"type": "watch", "watchlists": watchlists})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "watching"
    return communicator


def news(watchlist, external_id: str) -> ev.News:
    item = watchlist.items.select_related("instrument").get()
    return ev.News(provider="stocknews", code=item.instrument.symbol, received_at=T, instrument_id=item.instrument_id,
                   symbol=item.instrument.symbol, external_id=external_id, headline="h", published_at=T)


def team_alert(watchlist, external_id: str) -> ev.Alert:
    return ev.Alert(provider="trendspottr", code="q", received_at=T, external_id=external_id, triggered_at=T,
                    audience=team_audience(watchlist.team_id), headline="team alert")


async def assert_lost_and_kept(communicator, *, lost, kept) -> None:
    """Events for `lost` (instrument and team alerts) are not delivered; those for `kept` are."""
    events = await sync_to_async(lambda: [news(lost, "lost-news"), team_alert(lost, "lost-alert"),
                                          news(kept, "kept-news"), team_alert(kept, "kept-alert")])()
    await publish_events(events)
    received = [(await communicator.receive_json_from(timeout=5))["event"]["external_id"] for _ in range(2)]
    assert received == ["kept-news", "kept-alert"]


async def assert_ended(communicator, code: int, reason: str) -> None:
    assert await communicator.receive_json_from(timeout=WITHIN) == {"type": "access_ended", "code": code,
                                                                    "reason": reason}
    assert await communicator.receive_output(timeout=WITHIN) == {"type": "websocket.close", "code": code,
                                                                 "reason": reason}


async def test_a_removed_member_loses_the_teams_instruments_and_alerts_and_is_told_why():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id, gamma.id])
    await sync_to_async(membership_remove)(team=alpha.team, user=alice, by=lead)
    assert await communicator.receive_json_from(timeout=WITHIN) == {
        "type": "revoked", "reason": "Your access changed: you are no longer a member of Alpha."}
    await assert_lost_and_kept(communicator, lost=alpha, kept=gamma)
    await communicator.disconnect()


async def test_a_lowered_role_resyncs_the_board_which_then_has_no_edit_rights():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    client = await sync_to_async(logged_in)(alice)
    communicator = await open_socket(client, [alpha.id, gamma.id])
    await sync_to_async(membership_role_set)(team=alpha.team, user=alice, role=Role.VIEWER, by=lead)
    assert await communicator.receive_json_from(timeout=WITHIN) == {
        "type": "revoked", "reason": "Your access changed: your role in Alpha is now viewer."}
    snapshot = (await sync_to_async(client.get)("/api/board/")).json()
    assert {w["team"]["name"]: w["role"] for w in snapshot["watchlists"]} == {"Alpha": "viewer", "Gamma": "viewer"}
    # Still a member: both teams' events keep coming.
    await publish_events(await sync_to_async(lambda: [news(alpha, "a"), team_alert(alpha, "b")])())
    assert [(await communicator.receive_json_from(timeout=5))["event"]["external_id"] for _ in "ab"] == ["a", "b"]
    await communicator.disconnect()


async def test_membership_services_are_for_the_teams_owners():
    from django.core.exceptions import PermissionDenied

    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    with pytest.raises(PermissionDenied):
        await sync_to_async(membership_remove)(team=gamma.team, user=lead, by=alice)
    with pytest.raises(PermissionDenied):
        await sync_to_async(membership_role_set)(team=alpha.team, user=alice, role=Role.OWNER, by=alice)


async def test_admin_removing_a_member_in_the_teams_inline_or_lowering_a_role_reaches_the_socket():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    admin = await sync_to_async(logged_in)(lead)
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id, gamma.id])
    membership = await sync_to_async(Membership.objects.get)(user=alice, team=alpha.team)
    response = await sync_to_async(admin.post)(f"/admin/dashboard/membership/{membership.pk}/change/", {
        "user": alice.pk, "team": alpha.team_id, "role": "viewer", "_save": "Save"})
    assert response.status_code == 302
    assert (await communicator.receive_json_from(timeout=WITHIN))["reason"] == (
        "Your access changed: your role in Alpha is now viewer.")
    # The Team page's member inline: tick "delete" on alice's row.
    rows = await sync_to_async(lambda: list(Membership.objects.filter(team=alpha.team).order_by("pk")))()
    form = {"name": "Alpha", "_save": "Save", "memberships-TOTAL_FORMS": len(rows),
            "memberships-INITIAL_FORMS": len(rows), "memberships-MIN_NUM_FORMS": 0, "memberships-MAX_NUM_FORMS": 1000}
    for index, row in enumerate(rows):
        form.update({f"memberships-{index}-id": row.pk, f"memberships-{index}-team": alpha.team_id,
                     f"memberships-{index}-user": row.user_id, f"memberships-{index}-role": row.role})
        if row.user_id == alice.pk:
            form[f"memberships-{index}-DELETE"] = "on"
    response = await sync_to_async(admin.post)(f"/admin/dashboard/team/{alpha.team_id}/change/", form)
    assert response.status_code == 302
    assert (await communicator.receive_json_from(timeout=WITHIN))["reason"] == (
        "Your access changed: you are no longer a member of Alpha.")
    await assert_lost_and_kept(communicator, lost=alpha, kept=gamma)
    await communicator.disconnect()


async def test_deleting_a_team_takes_its_groups_from_every_members_socket():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id, gamma.id])
    lost = await sync_to_async(lambda: (news(alpha, "lost-news"), team_alert(alpha, "lost-alert")))()
    await sync_to_async(Team.objects.filter(pk=alpha.team_id).delete)()
    assert (await communicator.receive_json_from(timeout=WITHIN))["type"] == "revoked"
    await publish_events([*lost, await sync_to_async(news)(gamma, "kept-news")])
    assert (await communicator.receive_json_from(timeout=5))["event"]["external_id"] == "kept-news"
    await communicator.disconnect()


async def test_an_account_deactivated_in_the_admin_closes_its_sockets_with_the_reason():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    admin = await sync_to_async(logged_in)(lead)
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id])
    # The admin's user form, as the browser posts it with "Active" unticked.
    response = await sync_to_async(admin.post)(f"/admin/auth/user/{alice.pk}/change/", {
        "username": "alice", "date_joined_0": "2026-02-06", "date_joined_1": "12:00:00", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:2000]
    await assert_ended(communicator, CLOSE_DEACTIVATED, "Your access changed: this account was deactivated.")
    await communicator.disconnect()


async def test_logout_closes_that_sessions_sockets_and_keeps_the_other_browsers():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    laptop, phone = await sync_to_async(logged_in)(alice), await sync_to_async(logged_in)(alice)
    on_laptop, on_phone = await open_socket(laptop, [alpha.id]), await open_socket(phone, [alpha.id])
    assert (await sync_to_async(laptop.post)("/logout/")).status_code == 302
    await assert_ended(on_laptop, CLOSE_SESSION_ENDED, "Signed out.")
    # The phone's session is its own: it re-checks (resync, nothing to show) and stays live.
    assert await on_phone.receive_json_from(timeout=WITHIN) == {"type": "revoked", "reason": ""}
    await publish_events([await sync_to_async(news)(alpha, "still-live")])
    assert (await on_phone.receive_json_from(timeout=5))["event"]["external_id"] == "still-live"
    await on_phone.disconnect()
    await on_laptop.disconnect()


async def test_a_revoke_naming_the_session_closes_it_even_before_its_row_is_deleted():
    """Django sends `user_logged_out` before it flushes the session: the revoke names the session
    (a digest), so the close never depends on who wins that race."""
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    client = await sync_to_async(logged_in)(alice)
    communicator = await open_socket(client, [alpha.id])
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    await publish_revoke(user_id=alice.pk, ended_session=session_digest(session_key=key))
    await assert_ended(communicator, CLOSE_SESSION_ENDED, "Signed out.")
    assert await sync_to_async(Session.objects.filter(session_key=key).exists)()
    await communicator.disconnect()


async def test_a_password_change_closes_the_other_sessions_and_this_browser_goes_on_with_its_new_one():
    alice, lead, alpha, gamma = await sync_to_async(_setup)(staff=True)  # the admin's own password page
    here, elsewhere = await sync_to_async(logged_in)(alice), await sync_to_async(logged_in)(alice)
    socket_here, socket_elsewhere = await open_socket(here, [alpha.id]), await open_socket(elsewhere, [alpha.id])
    response = await sync_to_async(here.post)("/admin/password_change/", {
        "old_password": PASSWORD, "new_password1": "a-new-pw-for-tests-456", "new_password2": "a-new-pw-for-tests-456"})
    assert response.status_code == 302
    await assert_ended(socket_elsewhere, CLOSE_SESSION_ENDED, "Signed out: the password was changed.")
    # This browser's socket was opened with the session key Django has just rotated
    # (update_session_auth_hash): it closes too, and the browser reconnects on its new cookie.
    assert (await socket_here.receive_json_from(timeout=WITHIN))["type"] == "access_ended"
    assert (await socket_here.receive_output(timeout=WITHIN))["type"] == "websocket.close"
    again = await open_socket(here, [alpha.id])
    await publish_events([await sync_to_async(news)(alpha, "after-change")])
    assert (await again.receive_json_from(timeout=5))["event"]["external_id"] == "after-change"
    for communicator in (again, socket_here, socket_elsewhere):
        await communicator.disconnect()


async def test_an_admin_setting_someones_password_closes_all_their_sockets():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    admin = await sync_to_async(logged_in)(lead)
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id])
    response = await sync_to_async(admin.post)(f"/admin/auth/user/{alice.pk}/password/", {
        "password1": "a-new-pw-for-tests-456", "password2": "a-new-pw-for-tests-456", "set_usable_password": "true"})
    assert response.status_code == 302
    await assert_ended(communicator, CLOSE_SESSION_ENDED, "Signed out: the password was changed.")
    await communicator.disconnect()


async def test_set_password_and_save_anywhere_closes_the_sockets():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id])

    def change() -> None:
        someone = get_user_model().objects.get(pk=alice.pk)
        someone.set_password("a-new-pw-for-tests-456")
        someone.save()

    await sync_to_async(change)()
    await assert_ended(communicator, CLOSE_SESSION_ENDED, "Signed out: the password was changed.")
    await communicator.disconnect()


async def test_an_expired_session_is_closed_at_the_next_ping():
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    client = await sync_to_async(logged_in)(alice)
    communicator = await open_socket(client, [alpha.id])
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    await sync_to_async(Session.objects.filter(session_key=key).update)(expire_date=T - timedelta(days=1))
    await communicator.send_json_to({"type": "ping"})
    await assert_ended(communicator, CLOSE_SESSION_ENDED, "Signed out.")
    await communicator.disconnect()


async def test_a_login_elsewhere_does_not_disturb_open_sockets():
    """Each login saves `last_login`: that is no access change, so no revoke (no resync storm)."""
    alice, lead, alpha, gamma = await sync_to_async(_setup)()
    communicator = await open_socket(await sync_to_async(logged_in)(alice), [alpha.id])
    response = await sync_to_async(Client().post)("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302  # logged in (the login page saves last_login)
    # Sentinel: a revoke published by the login would be queued ahead of this event.
    await publish_events([await sync_to_async(news)(alpha, "first")])
    assert (await communicator.receive_json_from(timeout=5))["event"]["external_id"] == "first"
    await communicator.disconnect()
