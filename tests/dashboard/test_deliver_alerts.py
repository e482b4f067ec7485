"""The delivery worker against real loopback receivers: signed webhooks (rotation included), retries
on 500, time-outs and slow answers, 410 / 400 / 429, e-mail through a real SMTP server, the
revocation follow-up, two workers at once, and a dead letter after the day of retries, re-sent from
the admin. Time moves by a clock the test holds, never by sleeping."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from django.test import Client, override_settings

from dashboard.delivery import alert_deliveries_claim, alert_deliveries_enqueue
from dashboard.destinations import alert_destination_create, alert_destination_secret_rotate
from dashboard.management.commands.deliver_alerts import DeliveryWorker
from dashboard.models import AlertDelivery, AlertDestination, DeliveryKind, OutboxState, Role
from feeds.models import Alert
from tests.concurrency import requires_postgres, start_together
from tests.factories import team_with_watchlist, user
from tests.receivers import Answer, HttpReceiver, SmtpReceiver, verify_standard_webhook, wait_until

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **delta) -> None:
        with self._lock:
            self.now += timedelta(**delta)


class RunningWorker:
    """A DeliveryWorker on its own thread and loop, stopped as SIGTERM stops it (the stop event)."""

    def __init__(self, **options) -> None:
        options.setdefault("poll_seconds", 0.02)
        options.setdefault("sweep_seconds", 0)
        self.worker = DeliveryWorker(**options)
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        await self.worker.run(self.stop)

    def __enter__(self) -> RunningWorker:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(20)
        assert not self._thread.is_alive(), "the worker did not stop"


@pytest.fixture
def desk():
    owner = user("olivia")
    watchlist = team_with_watchlist("Alpha", {owner: Role.OWNER}, ["AAPL"])
    return owner, watchlist.team, watchlist.items.get().instrument


def make_alert(instrument, *, external_id="a-1", level="Extreme", audience="", provider="trendspottr") -> Alert:
    return Alert.objects.create(provider=provider, external_id=external_id, level=level, instrument=instrument,
                                headline="AAPL <!channel> trending", audience=audience,
                                triggered_at=datetime.now(timezone.utc))


def destination(owner, team, url, kind="webhook", **fields):
    made, secret = alert_destination_create(by=owner, team=team, kind=kind, name=kind, target=url,
                                            trendspottr_min_level="Elevated", **fields)
    return made, secret


def state(row_id) -> AlertDelivery:
    return AlertDelivery.objects.get(pk=row_id)


def enqueue_one(owner, team, instrument, url, *, clock=None, **fields) -> tuple[AlertDelivery, str, Alert]:
    dest, secret = destination(owner, team, url, **fields)
    alert = make_alert(instrument, audience=f"team-{team.pk}")
    alert_deliveries_enqueue(alerts=[alert], now=clock() if clock else datetime.now(timezone.utc))
    return AlertDelivery.objects.get(destination=dest), secret, alert


def test_a_signed_webhook_is_delivered_and_verifies(desk):
    owner, team, instrument = desk
    with HttpReceiver() as receiver:
        row, secret, alert = enqueue_one(owner, team, instrument, receiver.url)
        receiver.secret = secret  # a bad signature would be answered 401
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == OutboxState.DELIVERED, what="delivered")
    [got] = receiver.received
    assert got.answered == 200 and got.headers["webhook-id"] == row.webhook_id
    body = json.loads(got.body)
    assert body["type"] == "alert.fired" and body["data"]["external_id"] == alert.external_id


def test_during_rotation_both_secrets_sign(desk):
    owner, team, instrument = desk
    with HttpReceiver(secret="placeholder") as receiver:
        row, old_secret, _ = enqueue_one(owner, team, instrument, receiver.url)
        new_secret = alert_destination_secret_rotate(by=owner, destination=row.destination)
        receiver.secret = old_secret  # a receiver not yet switched still verifies
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == OutboxState.DELIVERED, what="delivered")
    got = receiver.received[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(secret=new_secret, headers=got.headers, body=got.body)


def test_500_then_success_retries_with_backoff_and_the_same_webhook_id(desk):
    owner, team, instrument = desk
    clock = Clock()
    with HttpReceiver(Answer(500), Answer(200)) as receiver:
        row, _, _ = enqueue_one(owner, team, instrument, receiver.url, clock=clock)
        with RunningWorker(clock=clock):
            wait_until(lambda: state(row.pk).attempts == 1 and state(row.pk).state == OutboxState.PENDING)
            retry = state(row.pk)
            assert retry.next_attempt_at > clock() and retry.last_status == 500
            clock.advance(hours=1)
            wait_until(lambda: state(row.pk).state == OutboxState.DELIVERED, what="the retry")
    assert [r.answered for r in receiver.received] == [500, 200]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_a_receiver_that_never_answers_times_out_and_one_that_is_slow_is_waited_for(desk):
    owner, team, instrument = desk
    with HttpReceiver(Answer(hang=True)) as hanging, HttpReceiver(Answer(200, delay=0.3)) as slow:
        hung_row, _, alert = enqueue_one(owner, team, instrument, hanging.url)
        slow_dest, _ = destination(owner, team, slow.url)
        alert_deliveries_enqueue(alerts=[alert], now=datetime.now(timezone.utc))
        slow_row = AlertDelivery.objects.get(destination=slow_dest)
        with RunningWorker(total_seconds=1.0):
            wait_until(lambda: state(slow_row.pk).state == OutboxState.DELIVERED, what="the slow one")
            wait_until(lambda: state(hung_row.pk).last_error == "timed out", what="the time-out")
    assert state(hung_row.pk).state == OutboxState.PENDING  # to be retried


@pytest.mark.parametrize(("status", "expected", "enabled"), [(410, OutboxState.DEAD, False),
                                                            (400, OutboxState.DEAD, True)])
def test_410_disables_the_destination_and_400_is_dead_at_once(desk, status, expected, enabled):
    owner, team, instrument = desk
    with HttpReceiver(Answer(status)) as receiver:
        row, _, _ = enqueue_one(owner, team, instrument, receiver.url)
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == expected)
    assert state(row.pk).attempts == 1 and receiver.count() == 1
    assert AlertDestination.objects.get(pk=row.destination_id).enabled is enabled


def test_429_honours_retry_after(desk):
    owner, team, instrument = desk
    clock = Clock()
    with HttpReceiver(Answer(429, headers={"Retry-After": "7200"})) as receiver:
        row, _, _ = enqueue_one(owner, team, instrument, receiver.url, clock=clock)
        with RunningWorker(clock=clock):
            wait_until(lambda: state(row.pk).attempts == 1 and state(row.pk).state == OutboxState.PENDING)
    assert state(row.pk).next_attempt_at >= clock() + timedelta(seconds=7200)


def test_dead_after_a_day_of_failures_then_resent_from_the_admin(desk, admin_user):
    owner, team, instrument = desk
    clock = Clock()
    with HttpReceiver(Answer(503)) as receiver:
        row, _, _ = enqueue_one(owner, team, instrument, receiver.url, clock=clock)
        with RunningWorker(clock=clock):
            for _ in range(200):  # far more turns than a day of capped backoff needs
                if state(row.pk).state == OutboxState.DEAD:
                    break
                attempts = state(row.pk).attempts
                wait_until(lambda: state(row.pk).attempts > attempts, what="an attempt")
                wait_until(lambda: state(row.pk).state != OutboxState.SENDING, what="its outcome")
                clock.advance(hours=1)
        dead = state(row.pk)
        assert dead.state == OutboxState.DEAD and "gave up" in dead.last_error
        assert dead.attempts > 10 and clock() >= dead.retry_until - timedelta(hours=1)  # not before the day is out
        receiver.script = [Answer(200)]
        admin = Client()
        admin.force_login(admin_user)
        response = admin.post("/admin/dashboard/alertdelivery/", {"action": "resend", "_selected_action": [row.pk]})
        assert response.status_code == 302
        assert state(row.pk).state == OutboxState.PENDING
        with RunningWorker(clock=clock):
            wait_until(lambda: state(row.pk).state == OutboxState.DELIVERED, what="the re-send")


def test_email_through_a_real_smtp_server(desk):
    owner, team, instrument = desk
    with SmtpReceiver() as smtp, override_settings(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                                                   EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp.port):
        row, _, _ = enqueue_one(owner, team, instrument, "desk@example.com", kind="email")
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == OutboxState.DELIVERED)
    [(sender, recipients, content)] = smtp.messages
    assert recipients == ["desk@example.com"] and b"AAPL <!channel> trending" in content


def test_a_refused_recipient_is_a_dead_letter(desk):
    owner, team, instrument = desk
    with SmtpReceiver() as smtp, override_settings(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                                                   EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp.port):
        smtp.mailbox.refuse_with = "550 no such user"
        row, _, _ = enqueue_one(owner, team, instrument, "nobody@example.com", kind="email")
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == OutboxState.DEAD)


def test_a_revoked_alert_sends_a_follow_up_after_the_alert(desk):
    owner, team, instrument = desk
    with HttpReceiver() as receiver:
        row, _, alert = enqueue_one(owner, team, instrument, receiver.url)
        alert.revoked_at = datetime.now(timezone.utc)
        alert.save()
        alert_deliveries_enqueue(alerts=[alert], kind=DeliveryKind.REVOKE, now=datetime.now(timezone.utc))
        with RunningWorker():
            wait_until(lambda: AlertDelivery.objects.filter(state=OutboxState.DELIVERED).count() == 2)
    assert [json.loads(r.body)["type"] for r in receiver.received] == ["alert.fired", "alert.revoked"]


def test_two_workers_send_each_row_once(desk):
    owner, team, instrument = desk
    with HttpReceiver(Answer(200, delay=0.05)) as receiver:
        dest, _ = destination(owner, team, receiver.url)
        alerts = [make_alert(instrument, external_id=f"a-{i}", audience=f"team-{team.pk}") for i in range(20)]
        alert_deliveries_enqueue(alerts=alerts, now=datetime.now(timezone.utc))
        alert_deliveries_enqueue(alerts=alerts, now=datetime.now(timezone.utc))  # idempotent
        assert AlertDelivery.objects.count() == 20
        with RunningWorker(concurrency=4), RunningWorker(concurrency=4):
            wait_until(lambda: AlertDelivery.objects.filter(state=OutboxState.DELIVERED).count() == 20, timeout=20)
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 20 == len(set(ids))


def test_concurrent_claims_never_share_a_row(desk):
    owner, team, instrument = desk
    destination(owner, team, "http://127.0.0.1:9/hook")
    alerts = [make_alert(instrument, external_id=f"c-{i}", audience=f"team-{team.pk}") for i in range(30)]
    now = datetime.now(timezone.utc)
    alert_deliveries_enqueue(alerts=alerts, now=now)
    claims = start_together(*[lambda: [c.id for c in alert_deliveries_claim(now=now, limit=12)]] * 3).results()
    claimed = [i for claim in claims for i in claim]
    assert len(claimed) == len(set(claimed)) == 30


def test_connection_refused_is_retried(desk):
    owner, team, instrument = desk
    row, _, _ = enqueue_one(owner, team, instrument, "http://127.0.0.1:9/hook")  # discard port: nothing listens
    with RunningWorker(timeout=httpx.Timeout(2.0, connect=1.0)):
        wait_until(lambda: state(row.pk).attempts == 1 and state(row.pk).state == OutboxState.PENDING)
    assert state(row.pk).last_error.startswith("connection failed")


@pytest.mark.parametrize("allowed", [[], ["10.0.0.0/8"]])
def test_a_destination_on_a_loopback_or_private_address_is_refused_unless_its_network_is_allowed(desk, allowed):
    """No server-side request forgery: an owner's URL cannot reach what only the server sees."""
    owner, team, instrument = desk
    with HttpReceiver() as receiver, override_settings(ALERT_DESTINATION_ALLOWED_NETWORKS=allowed):
        row, _, _ = enqueue_one(owner, team, instrument, receiver.url)
        with RunningWorker():
            wait_until(lambda: state(row.pk).state == OutboxState.DEAD, what="refused as a dead letter")
    assert receiver.received == []
    assert "not public" in state(row.pk).last_error
