"""Credentials encrypted at rest (feeds/crypto.py): what the column holds, what Python reads, the
key setting (required in production, a public development key with DEBUG), and the migration
that encrypts what earlier releases stored in clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from datetime import datetime, timezone

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings

from feeds import logging as feeds_logging
from feeds.crypto import UndecryptableSecret, decrypt, encrypt
from feeds.models import ProviderAccount, WebhookConfig

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"token": "tok-9b1c77e0a4d2", "api_key": "key-51f0aa6c2e93", "password": "pw-c3d94e27b810",
               "secret": "sec-07ae5b9f14c6"}


def stored(table: str, pk: int, *columns: str) -> tuple:
    """The columns as the database holds them, read past the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()


@pytest.mark.django_db
def test_every_credential_is_a_fernet_token_in_the_column_and_plaintext_in_python():
    account = ProviderAccount.objects.create(provider="knowsis", endpoint="wss://x.example", username="desk",
                                             **CREDENTIALS)
    twin = ProviderAccount.objects.create(provider="stocknews", endpoint="wss://y.example", **CREDENTIALS)
    columns = stored("feeds_provideraccount", account.pk, *CREDENTIALS)
    current = Fernet(settings.FIELD_ENCRYPTION_KEYS[0])
    for (field, plaintext), column in zip(CREDENTIALS.items(), columns):
        assert plaintext not in column and current.decrypt(column.encode()).decode() == plaintext, field
    # Randomised: equal secrets never show as equal columns.
    assert set(columns).isdisjoint(stored("feeds_provideraccount", twin.pk, *CREDENTIALS))
    reread = ProviderAccount.objects.get(pk=account.pk)
    assert {field: getattr(reread, field) for field in CREDENTIALS} == CREDENTIALS


@pytest.mark.django_db
def test_the_webhook_path_token_and_its_url_are_encrypted_and_an_unset_secret_stays_empty():
    token = "path-token-5e2f0c9d8b7a6f41"
    config = WebhookConfig.objects.create(provider="trendspottr", path_token=token, secret_sha256="0" * 64,
                                          public_url=f"https://desk.example.com/hooks/trendspottr/{token}/")
    assert not any(token in column for column in stored("feeds_webhookconfig", config.pk, "path_token", "public_url"))
    assert WebhookConfig.objects.get().path_token == token
    assert config.masked_url == "https://desk.example.com/hooks/trendspottr/***/"
    account = ProviderAccount.objects.create(provider="insightsentry", endpoint="wss://x.example", api_key="k" * 20)
    assert stored("feeds_provideraccount", account.pk, "token", "password") == ("", "")


@pytest.mark.django_db
def test_a_value_no_key_decrypts_is_an_error_that_names_the_field_never_the_value():
    ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example", token=CREDENTIALS["token"])
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        with pytest.raises(UndecryptableSecret) as error:
            ProviderAccount.objects.get(provider="stocknews")
    assert "feeds.ProviderAccount.token" in str(error.value) and "FIELD_ENCRYPTION_KEYS" in str(error.value)
    assert CREDENTIALS["token"] not in str(error.value)


def test_an_old_key_still_decrypts_and_a_new_first_key_encrypts():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old]):
        written_before = encrypt("rotating-secret-1")
    with override_settings(FIELD_ENCRYPTION_KEYS=[new, old]):
        assert decrypt(written_before) == "rotating-secret-1"
        written_after = encrypt("rotating-secret-1")
    assert Fernet(new).decrypt(written_after.encode()) == b"rotating-secret-1"


@pytest.mark.django_db
def test_a_secret_read_from_the_database_is_masked_in_this_process_logs():
    account = ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example",
                                             token="read-back-secret-31415")
    feeds_logging._secrets.discard("read-back-secret-31415")  # as in a process that never wrote it
    assert "read-back-secret-31415" in feeds_logging.redact("token read-back-secret-31415")
    ProviderAccount.objects.get(pk=account.pk)
    assert feeds_logging.redact("refused read-back-secret-31415") == "refused ***"


# -- the key setting, in fresh processes with the real settings module --------------------------

def manage_check(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "FIELD_ENCRYPTION_KEYS")}
    code = ("import django; django.setup(); from feeds.crypto import decrypt, encrypt; "
            "print('roundtrip', decrypt(encrypt('x' * 12)) == 'x' * 12)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", "SECRET_KEY": "s" * 50, **env})


def test_production_refuses_to_start_without_encryption_keys():
    result = manage_check(DEBUG="0")
    assert result.returncode != 0
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEYS must be set when DEBUG is off" in result.stderr
    assert "Fernet.generate_key()" in result.stderr  # says how to make one


def test_a_malformed_key_is_refused_by_position_without_echoing_it():
    good = Fernet.generate_key().decode()
    result = manage_check(DEBUG="0", FIELD_ENCRYPTION_KEYS=f"{good},not-a-fernet-key-0f9e8d")
    assert result.returncode != 0 and "FIELD_ENCRYPTION_KEYS: key 2 is not a Fernet key" in result.stderr
    assert "not-a-fernet-key-0f9e8d" not in result.stderr and good not in result.stderr


def test_debug_without_keys_uses_the_public_development_key_and_production_uses_the_given_one():
    assert manage_check(DEBUG="1").stdout.strip().endswith("roundtrip True")
    assert manage_check(DEBUG="0", FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode()).stdout.strip().endswith(
        "roundtrip True")


def test_the_public_development_key_only_decrypts_in_production():
    development = settings.DEVELOPMENT_FIELD_ENCRYPTION_KEY
    first = manage_check(DEBUG="0", FIELD_ENCRYPTION_KEYS=development)
    assert first.returncode != 0 and "the public development key may not come first" in first.stderr
    # After a real key it may stay, to read (and `rotate-keys` away from) a demo database.
    moving = manage_check(DEBUG="0", FIELD_ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},{development}")
    assert moving.stdout.strip().endswith("roundtrip True")


# -- the data migration --------------------------------------------------------------------------

BEFORE = [("feeds", "0005_feed_heartbeat_and_degraded")]
AFTER = [("feeds", "0006_encrypt_provider_secrets")]


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_stored_plaintext_and_its_reversal_restores_it():
    token = "legacy-path-token-4a5b6c7d8e9f"
    url = f"https://desk.example.com/hooks/trendspottr/{token}/"
    try:
        migrate(BEFORE)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO feeds_provideraccount (provider, endpoint, token, api_key, username, password, "
                           "secret, enabled, options) VALUES ('knowsis', 'wss://x', %s, %s, 'u', %s, %s, true, '{}') "
                           "RETURNING id", list(CREDENTIALS.values()))
            account_id = cursor.fetchone()[0]
            cursor.execute("INSERT INTO feeds_webhookconfig (provider, public_url, path_token, secret_sha256, "
                           "previous_secret_sha256, registered_at) VALUES ('trendspottr', %s, %s, %s, '', %s) "
                           "RETURNING id", [url, token, "0" * 64, datetime.now(timezone.utc)])
            config_id = cursor.fetchone()[0]
        migrate(AFTER)
        columns = stored("feeds_provideraccount", account_id, *CREDENTIALS)
        assert not set(columns) & set(CREDENTIALS.values())
        assert [decrypt(column) for column in columns] == list(CREDENTIALS.values())
        webhook = stored("feeds_webhookconfig", config_id, "public_url", "path_token")
        assert [decrypt(column) for column in webhook] == [url, token]
        migrate(BEFORE)  # a rollback gives the previous release what it can read
        assert stored("feeds_provideraccount", account_id, *CREDENTIALS) == tuple(CREDENTIALS.values())
        assert stored("feeds_webhookconfig", config_id, "public_url", "path_token") == (url, token)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
