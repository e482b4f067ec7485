"""Fuzzing the TrendSpottr webhook view with real requests on PostgreSQL: any body, from anyone
or from the authenticated provider, gets a 2xx or 4xx answer, never a 5xx; and what is stored
is processed without an exception other than the parser's own "skip and count" one."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from feeds.models import WebhookConfig, WebhookDelivery
from feeds.providers.trendspottr.webhook import secret_digest
from tests.conftest import load_fixture_json
from tests.fuzzing import DEEP_TEXT, FUZZ, JSON_VALUES, mutated, raw_frames

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN, SECRET = "fuzz-p4th-t0ken-0123456789abcdef", "topsecret!!"
URL = f"/hooks/trendspottr/{TOKEN}/"
DOCUMENTED = load_fixture_json("trendspottr", "webhook_alert.json")

# Authenticated deliveries (dicts here) reach storage and processing: the documented one, mutated
# anywhere or only in its alert data, or with extra junk; the test gives each a fresh event id.
AUTHENTIC = st.one_of(
    mutated(DOCUMENTED),
    st.builds(lambda data: {**DOCUMENTED, "data": data}, mutated(DOCUMENTED["data"])),
    st.builds(lambda junk: {**DOCUMENTED, "junk": junk}, JSON_VALUES),
)
BODIES = st.one_of(
    st.binary(max_size=64),
    raw_frames(DOCUMENTED).map(lambda text: text.encode("utf-8", "surrogatepass")),
    DEEP_TEXT.map(str.encode),
    AUTHENTIC,
)


@pytest.fixture
def config():
    return WebhookConfig.objects.create(provider="trendspottr", public_url=f"https://desk.example.com{URL}",
                                        path_token=TOKEN, secret_sha256=secret_digest(SECRET))


def processed_deliveries(timeout: float = 20) -> list[WebhookDelivery]:
    deadline = time.monotonic() + timeout
    while WebhookDelivery.objects.filter(state="stored").exists():
        assert time.monotonic() < deadline, "deliveries still unprocessed"
        time.sleep(0.05)  # polling interval: the query above is the condition
    return list(WebhookDelivery.objects.all())


def test_any_body_gets_2xx_or_4xx_and_processing_only_skips(config):
    client = Client()
    answers: list[int] = []
    event_ids = itertools.count(1)

    @FUZZ
    @given(body=BODIES)
    def post_any(body: bytes | dict) -> None:
        if isinstance(body, dict):
            body = json.dumps({**body, "secret": SECRET, "event_id": next(event_ids)}).encode()
        response = client.post(URL, data=body, content_type="application/json")
        assert response.status_code in (200, 400, 401, 403), (response.status_code, body[:300])
        answers.append(response.status_code)

    post_any()
    deliveries = processed_deliveries()
    assert 200 in answers and 400 in answers  # both sides of the door were exercised
    errors = [d.error for d in deliveries if d.state == "failed"]
    assert all(error.startswith("UnsupportedMessage:") for error in errors), errors[:3]
