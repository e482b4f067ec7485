"""The TrendSpottr webhook receiver: the right status for every bad request (never a 500), store,
answer, then process (a slow or failing processing never delays the 200; a failed one is retried
from its row), dedupe on event_id, and the secret kept out of the database and the logs."""

from __future__ import annotations

import json
import logging
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.test import Client

from feeds.groups import audience_group
from feeds.models import Alert, WebhookConfig, WebhookDelivery
from feeds.providers.trendspottr.webhook import secret_digest
from feeds.webhook_processor import processor
from tests.concurrency import LockGate, requires_postgres, start_together
from tests.conftest import load_fixture_json
from tests.live import listening, listening_in_thread

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "p4th-t0ken-unguessable-0123456789"
URL = f"/hooks/trendspottr/{TOKEN}/"


@pytest.fixture
def config():
    return WebhookConfig.objects.create(provider="trendspottr", public_url=f"https://desk.example.com{URL}",
                                        path_token=TOKEN, secret_sha256=secret_digest("topsecret!!"),
                                        previous_secret_sha256=secret_digest("old-secret"))


@pytest.fixture(autouse=True)
def processed_before_the_flush(transactional_db):
    """Every test ends with its deliveries processed: the tables are flushed after it, and a
    processing still under way would race the flush."""
    yield
    settled(count=WebhookDelivery.objects.count())


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)  # the provider sends no CSRF token


def post(client, payload, url=URL, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return client.post(url, data=body, content_type="application/json", **kwargs)


def sample(**changes):
    payload = load_fixture_json("trendspottr", "webhook_alert.json")
    payload.update(changes)
    return payload


def settled(*, count: int = 1, timeout: float = 10) -> list[WebhookDelivery]:
    """The deliveries once `count` of them exist and none is waiting for its processing."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(WebhookDelivery.objects.order_by("id"))
        if len(rows) == count and all(row.state != "stored" for row in rows):
            return rows
        assert time.monotonic() < deadline, f"not processed within {timeout}s: {[(r.event_id, r.state) for r in rows]}"
        time.sleep(0.02)  # polling interval: the condition above is what the test waits for


def in_state(state: str, *, timeout: float = 10) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while (row := WebhookDelivery.objects.filter(state=state).first()) is None:
        assert time.monotonic() < deadline, f"no delivery became {state!r} within {timeout}s"
        time.sleep(0.02)
    return row


def test_an_alert_is_stored_without_the_secret_and_published_to_its_audience(client, config, caplog):
    with listening_in_thread(audience_group("user7")) as inbox, caplog.at_level(logging.DEBUG):
        response = post(client, sample())
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        [delivery] = settled()
        [event] = inbox.events(1)
    assert delivery.event_id == "38" and delivery.state == "processed"
    assert "secret" not in delivery.payload and "topsecret" not in json.dumps(delivery.payload)
    alert = Alert.objects.get()
    assert (alert.provider, alert.audience, alert.level, alert.notification_id) == ("trendspottr", "user7", "Elevated", "60479")
    assert alert.related_hashtags[:2] == ["#technology", "#tech"]
    assert alert.url == "http://www.bbc.co.uk/news/technology-22278955"
    assert event["headline"] == "Nokia phone gets Whatsapp button"
    assert "topsecret" not in caplog.text


@pytest.mark.asyncio
async def test_the_same_event_five_times_makes_one_alert_one_push_and_five_200s(client, config):
    async with listening(audience_group("user7")) as inbox:
        statuses = [(await sync_to_async(post)(client, sample(attempts=n))).status_code for n in range(5)]
        sentinel = sample(event_id=39)
        sentinel["data"]["notification_id"] = 60480
        await sync_to_async(post)(client, sentinel)
        await sync_to_async(settled)(count=2)
        assert statuses == [200] * 5 and await sync_to_async(Alert.objects.count)() == 2
        first, second = await inbox.events(2)
    assert (first["external_id"], second["external_id"]) == ("60479", "60480")  # no second push of 60479


def test_a_duplicate_event_gets_200_and_has_no_effect(client, config):
    assert post(client, sample()).status_code == 200
    response = post(client, sample(attempts=1))
    assert response.status_code == 200 and response.json() == {"status": "duplicate"}
    assert len(settled()) == 1 and Alert.objects.count() == 1


def test_the_previous_secret_is_accepted_during_a_rotation(client, config):
    assert post(client, sample(secret="old-secret")).status_code == 200


@pytest.mark.parametrize("secret", [None, 42, ["topsecret!!"], "wrong", "tøpsecret!!", "x" * 100_000, ""])
def test_bad_secrets_get_403_never_500(client, config, secret):
    assert post(client, sample(secret=secret)).status_code == 403
    assert WebhookDelivery.objects.count() == 0


def test_missing_secret_gets_401(client, config):
    payload = sample()
    del payload["secret"]
    assert post(client, payload).status_code == 401


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'"a string"'])
def test_non_object_bodies_get_400(client, config, body):
    assert post(client, body).status_code == 400


@pytest.mark.parametrize("event_id", [None, -1, 2**64, "38", 3.5, True])
def test_event_id_must_be_an_unsigned_64_bit_integer(client, config, event_id):
    assert post(client, sample(event_id=event_id)).status_code == 400


def test_64_bit_ids_are_kept_exactly(client, config):
    big = 2**64 - 1
    payload = sample(event_id=big)
    payload["data"]["notification_id"] = big - 1
    assert post(client, payload).status_code == 200
    assert [row.event_id for row in settled()] == [str(big)]
    assert Alert.objects.get().notification_id == str(big - 1)


def test_a_body_over_256_kib_gets_400(client, config):
    assert post(client, sample(pad="x" * (300 * 1024))).status_code == 400


def test_get_is_405_and_an_unknown_token_404(client, config):
    assert client.get(URL).status_code == 405
    assert post(client, sample(), url="/hooks/trendspottr/guess/").status_code == 404


def test_an_unhandled_event_type_is_stored_and_acknowledged(client, config):
    assert post(client, sample(type="digest")).status_code == 200
    assert [row.state for row in settled()] == ["ignored"] and Alert.objects.count() == 0


def test_a_malformed_alert_is_stored_for_retry_and_acknowledged(client, config):
    payload = sample()
    payload["data"]["level"] = "Apocalyptic"
    assert post(client, payload).status_code == 200
    [delivery] = settled()
    assert delivery.state == "failed" and "unknown level" in delivery.error


def test_503_only_when_the_delivery_cannot_be_stored(client, config, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr("feeds.views.webhook_delivery_store", broken)  # a failing database cannot run here
    assert post(client, sample()).status_code == 503


def test_process_webhooks_retries_a_failed_delivery(client, config):
    from io import StringIO

    from django.core.management import call_command

    payload = sample()
    payload["data"]["level"] = "Apocalyptic"
    post(client, payload)
    [delivery] = settled()
    fixed = dict(delivery.payload)
    fixed["data"] = {**fixed["data"], "level": "High"}  # e.g. after a parser fix, the stored payload processes
    WebhookDelivery.objects.filter(pk=delivery.pk).update(payload=fixed)
    out = StringIO()
    call_command("process_webhooks", stdout=out)
    assert "event 38: processed" in out.getvalue() and Alert.objects.get().level == "High"


def test_a_delivery_nobody_processed_is_picked_up_by_process_webhooks(client, config):
    from io import StringIO

    from django.core.management import call_command

    from feeds.providers.trendspottr.webhook import without_secret
    from feeds.services import webhook_delivery_store

    # What a process killed between storing and processing leaves behind: a stored row, no more.
    webhook_delivery_store(provider="trendspottr", event_id="38", payload=without_secret(sample()))
    out = StringIO()
    call_command("process_webhooks", stdout=out)
    assert out.getvalue() == "trendspottr event 38: processed\n" and Alert.objects.count() == 1
    call_command("process_webhooks", stdout=out)  # nothing pending any more: nothing done twice
    assert Alert.objects.count() == 1


@requires_postgres
def test_a_slow_processing_does_not_delay_the_200(config):
    # The seam is real: our lock on the alert table holds the processing inside its INSERT.
    with LockGate("LOCK TABLE feeds_alert IN ACCESS EXCLUSIVE MODE") as gate:
        answered = start_together(lambda: post(Client(), sample()))
        [response] = answered.results(timeout=10)  # inline processing would wait here for the lock
        gate.wait_for_waiters(1, answered)  # ... and the processing is under way, held at our lock
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert WebhookDelivery.objects.get().state == "stored"
    assert [row.state for row in settled()] == ["processed"] and Alert.objects.count() == 1


@requires_postgres
def test_a_failed_processing_keeps_its_error_and_is_retried_from_the_row(client, config, monkeypatch):
    monkeypatch.setattr(processor, "retry_after", 0.2)  # the sweep's period and the first retry's delay
    refuse = "tw_test_refuse_alerts"
    with connection.cursor() as cursor:  # a real failure of the alert INSERT, until we drop it
        cursor.execute(f"ALTER TABLE feeds_alert ADD CONSTRAINT {refuse} CHECK (false) NOT VALID")
        try:
            assert post(client, sample()).status_code == 200
            failed = in_state("failed")
            assert refuse in failed.error and failed.payload["data"]["level"] == "Elevated"
            assert Alert.objects.count() == 0
        finally:
            cursor.execute(f"ALTER TABLE feeds_alert DROP CONSTRAINT {refuse}")
    retried = in_state("processed")
    assert retried.error == "" and retried.processed_at > failed.processed_at
    assert Alert.objects.count() == 1


def _authentic(text: str) -> str:
    """A documented delivery, correct secret and id, with `text` as its headline's raw JSON."""
    return json.dumps(sample()).replace('"Nokia phone gets Whatsapp button"', text)


@pytest.mark.parametrize("body, answer", [
    (b"[" * 100_000, "body is not JSON"),  # json.loads raises RecursionError
    (b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "body is not JSON"),
    (_authentic("[" * 40 + "]" * 40), "nested deeper than 32 levels"),  # parses, but deeper than we keep
    (json.dumps(sample()).encode("utf-16"), "body is not UTF-8"),
    (json.dumps(sample(note="café"), ensure_ascii=False).encode("latin-1"), "body is not UTF-8"),
    (b'\xef\xbb\xbf{"secret": "topsecret!!"}', "body is not JSON"),  # a UTF-8 byte order mark
    (_authentic("NaN"), "body is not JSON"),
    (_authentic("1e400"), "a number out of range"),  # reads as inf: jsonb cannot hold it
    (_authentic('"\\u0000"'), "a NUL character in a string"),
    (_authentic('"\\ud800"'), "a lone surrogate in a string"),
    (json.dumps(sample(event_id=10**400)), "event_id must be an unsigned 64-bit integer"),
    (json.dumps(sample()).replace("38", "1" * 5000, 1), "body is not JSON"),  # past int's 4,300 digits
])
def test_hostile_bodies_get_400_with_a_clear_answer_never_500(client, config, body, answer):
    response = post(client, body)
    assert (response.status_code, response.json()) == (400, {"status": answer})
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.parametrize("changes", [{"created": 10**400}, {"created": 1e300}, {"data": [1]}, {"type": ["alert"]},
                                     {"data": {"level": {"High": 1}}}, {"created": "yesterday"}])
def test_wrong_types_inside_a_valid_delivery_are_stored_and_acknowledged(client, config, changes):
    assert post(client, sample(**changes)).status_code == 200
    [delivery] = settled()
    assert delivery.state in ("processed", "ignored") or delivery.error.startswith("UnsupportedMessage:")
