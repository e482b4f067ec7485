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


def test_rotate_keys_moves_every_secret_to_the_new_first_key():
    from cryptography.fernet import Fernet
    from django.db import connection
    from django.test import override_settings

    from feeds.models import WebhookConfig

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old]):
        run("set", "knowsis", "--endpoint", "wss://k.example", "--api-key", "app-key-7731", "--secret", SECRET)
        WebhookConfig.objects.create(provider="trendspottr", public_url="https://d.example/hooks/trendspottr/t0k3n-88/",
                                     path_token="t0k3n-88", secret_sha256="0" * 64)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new, old]):
        assert run("rotate-keys").startswith("4 of 4 stored secrets re-encrypted")
        assert run("rotate-keys").startswith("0 of 4 stored secrets re-encrypted")  # idempotent
    with override_settings(FIELD_ENCRYPTION_KEYS=[new]):  # the old key may go now
        account = ProviderAccount.objects.get(provider="knowsis")
        assert (account.api_key, account.secret) == ("app-key-7731", SECRET)
        assert WebhookConfig.objects.get().path_token == "t0k3n-88"
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key, secret FROM feeds_provideraccount")
        for column in cursor.fetchone():
            Fernet(new).decrypt(column.encode())


def test_rotate_keys_without_the_key_that_encrypted_a_value_fails_and_changes_nothing():
    from cryptography.fernet import Fernet
    from django.test import override_settings

    run("set", "stocknews", "--endpoint", "wss://x.example/ws", "--token", SECRET)
    before = ProviderAccount.objects.values_list("token", flat=True).get()
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        with pytest.raises(CommandError, match="does not decrypt with any key.*Nothing was changed"):
            run("rotate-keys")
    assert ProviderAccount.objects.values_list("token", flat=True).get() == before == SECRET
