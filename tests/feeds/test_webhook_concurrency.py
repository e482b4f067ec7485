"""Duplicate TrendSpottr deliveries racing each other (the provider retries on timeouts, so the
same event can be in flight several times at once): one stored delivery, one alert, one push, and
every sender gets a 200.

SQLite hid this race: its writers queue for the database lock at BEGIN, so the second delivery only
ever saw the first one committed. On PostgreSQL the five inserts run at the same moment, the losers
wait on the winner's uncommitted row in the unique index and then fail with IntegrityError, which
must become "duplicate", never a 500 (the provider would retry it) nor a second alert.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from django.test import Client

from feeds.groups import audience_group
from feeds.models import Alert, WebhookConfig, WebhookDelivery
from feeds.providers.trendspottr.webhook import secret_digest
from tests.concurrency import LockGate, requires_postgres, start_together
from tests.conftest import load_fixture_json
from tests.live import listening

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
TOKEN = "c0ncurrent-p4th-t0ken-0123456789"
URL = f"/hooks/trendspottr/{TOKEN}/"
COPIES = 5


@pytest.fixture
def config():
    return WebhookConfig.objects.create(provider="trendspottr", public_url=f"https://desk.example.com{URL}",
                                        path_token=TOKEN, secret_sha256=secret_digest("topsecret!!"))


def delivery(**changes) -> str:
    payload = load_fixture_json("trendspottr", "webhook_alert.json")  # secret "topsecret!!", event 38, user7
    payload.update(changes)
    return json.dumps(payload)


def deliver(body: str):
    return Client().post(URL, data=body, content_type="application/json")


def processed(event_ids: set[str], timeout: float = 10) -> None:
    """Processing runs after the answer (feeds/webhook_processor.py): wait for it, with a deadline."""
    deadline = time.monotonic() + timeout
    while set(WebhookDelivery.objects.filter(state="processed").values_list("event_id", flat=True)) != event_ids:
        assert time.monotonic() < deadline, f"events {sorted(event_ids)} not processed within {timeout}s"
        time.sleep(0.02)  # polling interval: the query is the condition


def deliver_copies_at_once() -> list:
    # Readers pass, writers queue: every copy has checked its input and is inside the INSERT when
    # the gate opens, so the copies meet in the unique index on every run.
    with LockGate("LOCK TABLE feeds_webhookdelivery IN SHARE MODE") as gate:
        running = start_together(*(lambda n=n: deliver(delivery(attempts=n)) for n in range(COPIES)))
        gate.wait_for_waiters(COPIES, running)
    return running.results()


@pytest.mark.asyncio
async def test_five_copies_of_one_event_at_once_store_one_delivery_one_alert_one_push_and_answer_200(config):
    async with listening(audience_group("user7")) as inbox:
        replies = await asyncio.to_thread(deliver_copies_at_once)
        sentinel = json.loads(delivery(event_id=39))
        sentinel["data"]["notification_id"] = 60480
        assert (await asyncio.to_thread(deliver, json.dumps(sentinel))).status_code == 200

        assert [reply.status_code for reply in replies] == [200] * COPIES
        assert sorted(reply.json()["status"] for reply in replies) == ["duplicate"] * (COPIES - 1) + ["ok"]
        await asyncio.to_thread(processed, {"38", "39"})
        rows = await asyncio.to_thread(lambda: list(WebhookDelivery.objects.filter(event_id="38").values_list("state")))
        assert rows == [("processed",)]
        alerts = await asyncio.to_thread(lambda: list(Alert.objects.values_list("notification_id", flat=True)))
        assert sorted(alerts) == ["60479", "60480"]
        first, second = await inbox.events(2)
    assert (first["external_id"], second["external_id"]) == ("60479", "60480")  # no second push of 60479
