"""The socket's reads (dashboard.selectors.socket_access_get, watch_request_authorise), written in
plain SQL for speed: the same answers as the ORM rules they replace, on the test database."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from dashboard.models import Membership, Watchlist
from dashboard.selectors import socket_access_get, socket_audiences_get, watch_request_authorise
from feeds.groups import team_audience, user_audience
from tests.factories import team_with_watchlist, user

pytestmark = pytest.mark.django_db


def _session(member) -> str:
    client = Client()
    client.force_login(member)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_watch_authorisation_answers_per_id_against_the_users_teams_now():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL", "MSFT"])
    empty = Watchlist.objects.create(team=alpha.team, name="Empty")
    beta = team_with_watchlist("Beta", {carol: "owner"}, ["XOM"])
    aapl, msft = (item.instrument_id for item in alpha.items.order_by("position"))
    xom = beta.items.get().instrument_id

    allowed, refused_lists, refused_singles = watch_request_authorise(
        user_id=alice.pk, watchlist_ids={alpha.id, empty.id, beta.id, 999_999}, instrument_ids={aapl, xom, 888_888})
    assert allowed == {aapl, msft}  # the list's instruments, and the single one it may see
    assert refused_lists == {beta.id, 999_999}  # another team's and one that does not exist, alike
    assert refused_singles == {xom, 888_888}
    assert watch_request_authorise(user_id=alice.pk, watchlist_ids=set()) == (set(), set(), set())

    # Joining Beta: its list and instrument now; leaving Alpha: none of Alpha's.
    Membership.objects.create(user=alice, team=beta.team, role="viewer")
    Membership.objects.filter(user=alice, team=alpha.team).delete()
    assert watch_request_authorise(user_id=alice.pk, watchlist_ids={alpha.id, beta.id}, instrument_ids={aapl, xom}) \
        == ({xom}, {alpha.id}, {aapl})


def test_an_inactive_user_is_authorised_for_nothing():
    alice = user("alice")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    alice.is_active = False
    alice.save()
    aapl = alpha.items.get().instrument_id
    assert watch_request_authorise(user_id=alice.pk, watchlist_ids={alpha.id}, instrument_ids={aapl}) \
        == (set(), {alpha.id}, {aapl})


def test_socket_access_is_the_sessions_user_with_their_audiences_or_why_not():
    alice, bob = user("alice"), user("bob")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    session = _session(alice)
    assert socket_access_get(session_key=session) == (
        alice.pk, False, {team_audience(alpha.team_id), user_audience(alice.pk)}, "")
    assert socket_access_get(session_key=session, user_id=alice.pk)[0] == alice.pk
    assert socket_access_get(session_key=session, user_id=bob.pk) == (None, False, set(), "signed_out")
    assert socket_access_get(session_key="") == (None, False, set(), "signed_out")
    assert socket_access_get(session_key="no-such-session") == (None, False, set(), "signed_out")

    alice.set_password("a-new-password-for-tests-456")
    alice.save()
    assert socket_access_get(session_key=session)[3] == "password_changed"
    session = _session(alice)
    alice.is_active = False
    alice.save()
    assert socket_access_get(session_key=session)[3] == "deactivated"


def test_opening_a_socket_reads_no_teams_and_its_audiences_are_read_after_the_join():
    alice, carol = user("alice"), user("carol")
    alpha = team_with_watchlist("Alpha", {alice: "owner"}, ["AAPL"])
    assert socket_access_get(session_key=_session(alice), audiences=False) == (alice.pk, False, set(), "")
    assert socket_audiences_get(user_id=alice.pk) == {team_audience(alpha.team_id), user_audience(alice.pk)}
    assert socket_audiences_get(user_id=carol.pk) == {user_audience(carol.pk)}  # no team: their own only
    Membership.objects.filter(user=alice).delete()
    assert socket_audiences_get(user_id=alice.pk) == {user_audience(alice.pk)}


def test_a_session_is_refused_as_get_user_would_refuse_it(settings):
    from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    alice = user("alice")

    def tampered(**changes) -> str:
        store = SessionStore(_session(alice))
        store.update(changes)
        store.save()
        return store.session_key

    assert socket_access_get(session_key=tampered(**{SESSION_KEY: "not-a-number"}))[3] == "signed_out"
    assert socket_access_get(session_key=tampered(**{BACKEND_SESSION_KEY: "no.such.Backend"}))[3] == "signed_out"
    # Signed with a key that is now a fallback: still valid, as get_user accepts it.
    rotated, old_key = _session(alice), settings.SECRET_KEY
    settings.SECRET_KEY_FALLBACKS = [old_key]
    settings.SECRET_KEY = "a-brand-new-secret-key-for-this-test-only-0123456789"
    assert socket_access_get(session_key=rotated)[0] == alice.pk
    settings.SECRET_KEY_FALLBACKS = []  # dropped: the session no longer even decodes
    assert socket_access_get(session_key=rotated) == (None, False, set(), "signed_out")
    settings.SECRET_KEY_FALLBACKS = [old_key]
    alice.delete()
    assert socket_access_get(session_key=rotated) == (None, False, set(), "deactivated")  # a deleted user
