"""Login throttling (dashboard/login.py + django-axes): slowed, then locked, per account and per
address; a clear message; an admin unlocks. Time passing is simulated by moving the recorded
attempt times back, never by sleeping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.db.models import F, Sum
from django.test import Client

from dashboard.login import login_delay_seconds
from tests.factories import user

pytestmark = pytest.mark.django_db
RIGHT = "pw-for-tests-only-123"


def attempt(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def failures(**where) -> int:
    return AccessAttempt.objects.filter(**where).aggregate(n=Sum("failures_since_start"))["n"] or 0


def let_time_pass(seconds: float = 60) -> None:
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=seconds))


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_delay_grows_from_the_third_failure_and_is_capped():
    assert [login_delay_seconds(n) for n in range(9)] == [0, 0, 0, 2, 4, 8, 16, 30, 30]


def test_after_three_failures_the_next_try_waits_and_is_refused_without_a_password_check():
    user("alice")
    client = Client()
    for _ in range(3):
        assert attempt(client, "alice", "wrong").status_code == 200  # the form again, with its error
    refused = attempt(client, "alice", RIGHT)
    assert refused.status_code == 429
    assert b"Too many failed sign-ins. Wait 2 seconds, then try again." in refused.content
    assert not logged_in(client) and failures(username="alice") == 3  # not checked, not counted

    let_time_pass(3)
    assert attempt(client, "alice", RIGHT).status_code == 302
    assert logged_in(client) and failures(username="alice") == 0  # a success clears the count


def test_thirty_fast_failures_get_three_password_checks():
    user("alice")
    client = Client()
    statuses = [attempt(client, "alice", f"guess-{n}").status_code for n in range(30)]
    assert statuses == [200] * 3 + [429] * 27
    assert failures(username="alice") == 3


def test_ten_failures_lock_the_account_even_with_the_right_password_until_an_admin_unlocks():
    user("alice")
    client = Client()
    for _ in range(10):
        let_time_pass()
        attempt(client, "alice", "wrong")
    let_time_pass()
    locked = attempt(client, "alice", RIGHT)
    assert locked.status_code == 429 and not logged_in(client)
    assert b"Sign-in locked" in locked.content and b"locked for\n      15 minutes" in locked.content

    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root-admin", "a@example.com", "x" * 20))
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"alice" in listing.content
    ids = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    unlocked = admin.post("/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids,
                                                          "post": "yes"})
    assert unlocked.status_code == 302 and not AccessAttempt.objects.exists()
    assert attempt(client, "alice", RIGHT).status_code == 302 and logged_in(client)


def test_an_address_guessing_many_accounts_is_locked_and_other_addresses_are_not():
    user("alice")
    attacker = Client()
    for n in range(10):
        let_time_pass()
        attempt(attacker, f"someone-{n}", "wrong", address="10.0.0.7")
    let_time_pass()
    assert attempt(attacker, "alice", RIGHT, address="10.0.0.7").status_code == 429
    colleague = Client()
    assert attempt(colleague, "alice", RIGHT, address="10.0.0.8").status_code == 302
