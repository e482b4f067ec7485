"""The Instrument admin's "Import CSV": staff with the rights only, CSRF-protected, preview then apply."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from feeds.catalogue import COLUMNS
from feeds.models import Instrument

pytestmark = pytest.mark.django_db
URL = "/admin/feeds/instrument/import/"


def upload(*lines: str, name: str = "listings.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, "\n".join([",".join(COLUMNS), *lines, ""]).encode(), content_type="text/csv")


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-admin-123456"))
    return client


def test_the_changelist_offers_the_import_and_the_page_asks_for_a_file(admin_client):
    assert f'href="{URL}"' in admin_client.get("/admin/feeds/instrument/").content.decode()
    page = admin_client.get(URL).content.decode()
    assert 'type="file"' in page and "csrfmiddlewaretoken" in page


def test_only_staff_with_add_and_change_rights_may_import(client):
    User = get_user_model()
    client.force_login(User.objects.create_user("trader", password="pw-trader-123456"))
    assert client.get(URL).status_code == 302  # not staff: the admin's login page
    clerk = User.objects.create_user("clerk", password="pw-clerk-123456", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_instrument"))
    client.force_login(clerk)
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"file": upload("AAPL,Apple Inc.,NASDAQ,,,,")}).status_code == 403
    assert "Import CSV" not in client.get("/admin/feeds/instrument/").content.decode()
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["add_instrument", "change_instrument"]))
    assert client.get(URL).status_code == 200
    assert not Instrument.objects.exists()


def test_a_post_without_the_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-admin-123456"))
    assert client.post(URL, {"file": upload("AAPL,Apple Inc.,NASDAQ,,,,")}).status_code == 403
    assert not Instrument.objects.exists()


def test_preview_shows_the_changes_and_writes_nothing_then_apply_imports_that_file(admin_client):
    Instrument.objects.create(symbol="AAPL", name="Apple", exchange="NASDAQ")
    preview = admin_client.post(URL, {"file": upload("AAPL,Apple Inc.,NASDAQ,,,,", "JPM,JPMorgan,NYSE,NYSE:JPM,,,")})
    page = preview.content.decode()
    assert "dry run: would be 1 created, 1 updated, 0 unchanged; nothing written" in page
    assert "JPM" in page and "AAPL: name" in page
    assert list(Instrument.objects.values_list("symbol", "name")) == [("AAPL", "Apple")]
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', page).group(1)
    applied = admin_client.post(URL, {"apply": "1", "digest": digest}, follow=True)
    assert "Import of listings.csv: 1 created, 1 updated, 0 unchanged" in applied.content.decode()
    assert dict(Instrument.objects.values_list("symbol", "name")) == {"AAPL": "Apple Inc.", "JPM": "JPMorgan"}
    # The preview was used up: applying it again (a double click, the back button) imports nothing twice.
    again = admin_client.post(URL, {"apply": "1", "digest": digest}, follow=True).content.decode()
    assert "no longer waiting" in again


def test_errors_and_the_file_name_are_shown_escaped_and_offer_nothing_to_apply(admin_client):
    bad = upload("<b>X,Bad,NYSE,,,,", "JPM,JPMorgan,NYSE,,,,", name="<img src=x onerror=alert(1)>.csv")
    page = admin_client.post(URL, {"file": bad}).content.decode()
    assert "1 error(s): nothing imported" in page
    assert "line 2: symbol &#x27;&lt;B&gt;X&#x27; is not a ticker" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in page
    assert "<B>X" not in page and "<img src=x" not in page
    assert 'name="apply"' not in page
    assert not Instrument.objects.exists()
