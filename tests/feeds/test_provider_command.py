"""`manage.py provider set/list`: configure accounts without the admin; secrets never printed."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from feeds.models import ProviderAccount

pytestmark = pytest.mark.django_db
SECRET = "sn-live-token-abcdef-9876"


def run(*args: str) -> str:
    out = StringIO()
    call_command("provider", *args, stdout=out)
    return out.getvalue()


def test_set_then_list_masks_secrets():
    run("set", "stocknews", "--endpoint", "wss://dev.stocknews.live/ws", "--token", SECRET, "--enable")
    listing = run("list")
    assert "stocknews" in listing and "wss://dev.stocknews.live/ws" in listing
    assert "token: set, ends 9876" in listing and "api_key: not set" in listing
    assert SECRET not in listing and "abcdef" not in listing


def test_set_without_a_secret_keeps_the_stored_one_and_toggles_enabled():
    run("set", "stocknews", "--endpoint", "wss://a.example/ws", "--token", SECRET)
    run("set", "stocknews", "--endpoint", "wss://b.example/ws", "--disable")
    account = ProviderAccount.objects.get(provider="stocknews")
    assert account.token == SECRET and account.endpoint == "wss://b.example/ws" and not account.enabled


def test_a_token_in_the_endpoint_query_is_masked_in_the_listing():
    run("set", "stocknews", "--endpoint", f"wss://x.example/ws?token={SECRET}")
    assert SECRET not in run("list")


def test_set_requires_an_endpoint_for_a_new_account():
    with pytest.raises(CommandError, match="endpoint is required"):
        run("set", "stocknews", "--token", SECRET)
