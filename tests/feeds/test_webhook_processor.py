"""Processing stored webhook deliveries after the response: exactly once however many processes
claim a row at the same moment, and retried from the row (a crash's leftovers at once, failures
after a wait that doubles, for a day)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from feeds.models import Alert, WebhookDelivery
from feeds.providers.trendspottr.webhook import without_secret
from feeds.services import webhook_deliveries_due, webhook_delivery_process, webhook_delivery_store
from feeds.webhook_processor import WebhookProcessor
from tests.concurrency import LockGate, requires_postgres, start_together
from tests.conftest import load_fixture_json

pytestmark = pytest.mark.django_db(transaction=True)


def stored(event_id: int, *, state: str = "stored", received_ago: timedelta = timedelta(0),
           processed_ago: timedelta | None = None) -> int:
    payload = without_secret(load_fixture_json("trendspottr", "webhook_alert.json"))
    payload["event_id"] = event_id
    payload["data"]["notification_id"] = 60000 + event_id
    delivery, _ = webhook_delivery_store(provider="trendspottr", event_id=str(event_id), payload=payload)
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=state, received_at=now - received_ago,
        processed_at=None if processed_ago is None else now - processed_ago)
    return delivery.pk


@requires_postgres
def test_two_claims_at_once_process_a_delivery_once_and_the_second_does_not_wait():
    pk = stored(38)
    # Our lock on the alert table holds the first claimant inside its transaction, row claimed.
    with LockGate("LOCK TABLE feeds_alert IN ACCESS EXCLUSIVE MODE") as gate:
        first = start_together(lambda: webhook_delivery_process(delivery_id=pk))
        gate.wait_for_waiters(1, first)
        second = start_together(lambda: webhook_delivery_process(delivery_id=pk))
        assert second.results(timeout=5) == [None]  # skipped the claimed row, did not queue behind it
    assert first.results() == ["processed"]
    assert webhook_delivery_process(delivery_id=pk) is None  # done: a later run has nothing to do
    assert Alert.objects.count() == 1


def test_the_sweep_takes_a_crash_s_leftovers_and_failures_whose_wait_is_over_oldest_first():
    minute = timedelta(minutes=1)
    lost = stored(1, received_ago=2 * minute)  # stored, never processed: its process died
    stored(2, received_ago=timedelta(seconds=10))  # fresh: still in its own process's queue
    due_failure = stored(3, state="failed", received_ago=10 * minute, processed_ago=6 * minute)  # failing 4, waited 6
    stored(4, state="failed", received_ago=10 * minute, processed_ago=2 * minute)  # failing 8, waited only 2
    stored(5, state="failed", received_ago=timedelta(days=2), processed_ago=timedelta(days=1))  # given up
    stored(6, state="processed", received_ago=2 * minute, processed_ago=2 * minute)
    due = webhook_deliveries_due(now=timezone.now(), retry_after=minute, give_up_after=timedelta(days=1))
    assert due == [due_failure, lost]
    assert WebhookProcessor(retry_after=60).sweep() == 2
    states = dict(WebhookDelivery.objects.values_list("event_id", "state"))
    assert states == {"1": "processed", "2": "stored", "3": "processed", "4": "failed", "5": "failed", "6": "processed"}
    assert sorted(Alert.objects.values_list("notification_id", flat=True)) == ["60001", "60003"]
