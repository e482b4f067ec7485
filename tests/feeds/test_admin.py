"""Provider secrets are write-only in the admin: shown masked, never rendered back."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from feeds.models import ProviderAccount

pytestmark = pytest.mark.django_db
SECRET = "very-secret-token-value-4321"


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-admin-123456")
    client.force_login(admin)
    return client


def test_change_page_shows_mask_not_secret(admin_client):
    account = ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example/ws", token=SECRET)
    page = admin_client.get(f"/admin/feeds/provideraccount/{account.pk}/change/").content.decode()
    assert "set, ends 4321" in page
    assert SECRET not in page
    listing = admin_client.get("/admin/feeds/provideraccount/").content.decode()
    assert SECRET not in listing and "set, ends 4321" in listing


def test_blank_secret_keeps_the_stored_value_and_clear_erases_it(admin_client):
    account = ProviderAccount.objects.create(provider="stocknews", endpoint="wss://x.example/ws", token=SECRET)
    url = f"/admin/feeds/provideraccount/{account.pk}/change/"
    form = {"provider": "stocknews", "endpoint": "wss://y.example/ws", "enabled": "on", "username": "",
            "token": "", "api_key": "", "password": "", "secret": "", "options": "{}"}
    assert admin_client.post(url, form).status_code == 302
    account.refresh_from_db()
    assert account.token == SECRET and account.endpoint == "wss://y.example/ws"
    assert admin_client.post(url, {**form, "clear_secrets": ["token"]}).status_code == 302
    account.refresh_from_db()
    assert account.token == ""
