"""The alert delivery outbox: enqueue, claim, record, re-send.

Enqueueing only INSERTs (`bulk_create(ignore_conflicts=True)` on the unique (alert, destination,
kind)): the pipeline sink does it after a batch is stored, so a feed never waits on a Slack or an
SMTP server, and enqueueing an alert twice leaves one row. `manage.py deliver_alerts` does the
sending: it claims due rows with SELECT … FOR UPDATE SKIP LOCKED in a short transaction, marking
them `sending` until a lease runs out (a worker killed mid-send leaves them due again, never lost),
sends outside any transaction and records the outcome. Several workers may run at once; each row
is sent by one of them at a time. Delivery is at least once: a crash between a receiver's 2xx and
our record sends again, with the same `webhook-id`, which receivers deduplicate by.

A failure is retried with backoff (dashboard.senders.retry_delay, or longer if the receiver sent
Retry-After) until `retry_until` (a day after enqueueing); the attempt after that makes a dead
letter, shown in the admin, where "re-send" gives it another day.

Alerts stored outside the feed pipeline (TrendSpottr webhooks, stored by feeds.services) and any
the sink missed (a crash between store and sink) are caught by `alert_deliveries_sweep`, which
each worker runs every minute over the last quarter hour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q

from feeds import events as ev
from feeds.models import Alert

from .destinations import alert_destinations_for, destination_signing_secrets
from .models import AlertDelivery, AlertDestination, DeliveryKind, OutboxState
from .senders import AlertMessage, Outcome, retry_delay

__all__ = [
    "Claimed", "alert_deliveries_enqueue", "alert_deliveries_sink", "alert_deliveries_sweep",
    "alert_deliveries_claim", "alert_delivery_record", "alert_deliveries_resend", "alert_message",
]

log = logging.getLogger(__name__)


def retry_window() -> timedelta:
    return timedelta(seconds=getattr(settings, "ALERT_DELIVERY_RETRY_SECONDS", 24 * 3600))


CLAIM_LEASE = timedelta(seconds=60)  # far above one attempt's 10 s: a live worker always records first
SWEEP_LOOKBACK = timedelta(minutes=15)


def alert_deliveries_enqueue(*, alerts: list[Alert], kind: str = DeliveryKind.FIRE, now: datetime,
                             created_before: datetime | None = None) -> int:
    """Insert the outbox rows for these alerts (fire: every matching destination; revoke: every
    destination that was sent, or is to be sent, the alert). Returns the rows offered."""
    rows: list[AlertDelivery] = []
    until = now + retry_window()
    for alert in alerts:
        if kind == DeliveryKind.REVOKE:
            # Not where the alert itself went dead: a receiver must not hear "withdrawn" for what it never got.
            destinations = AlertDestination.objects.filter(
                enabled=True, deliveries__alert=alert, deliveries__kind=DeliveryKind.FIRE,
                deliveries__state__in=(OutboxState.PENDING, OutboxState.SENDING, OutboxState.DELIVERED)).distinct()
        else:
            destinations = alert_destinations_for(alert=alert)
        rows += [AlertDelivery(alert=alert, destination=destination, kind=kind, created_at=now,
                               next_attempt_at=now, retry_until=until)
                 for destination in destinations
                 if created_before is None or destination.created_at <= created_before]
    AlertDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _alerts_named(keys: set[tuple[str, str]]) -> list[Alert]:
    query = Q()
    for provider, external_id in keys:
        query |= Q(provider=provider, external_id=external_id)
    return list(Alert.objects.filter(query)) if keys else []


def alert_deliveries_sink(*, events: list[ev.Event]) -> list[ev.Event]:
    """The FEEDS_EVENT_SINKS entry: after a batch is stored (and after the rules, whose alerts it
    therefore sees), insert outbox rows for new alerts and revocations. Sends nothing."""
    from django.utils import timezone

    fired = {(e.provider, e.external_id) for e in events if isinstance(e, ev.Alert)}
    revoked = {(e.provider, e.external_id) for e in events if isinstance(e, ev.AlertRevoked)}
    if fired or revoked:
        now = timezone.now()
        with transaction.atomic():
            alert_deliveries_enqueue(alerts=_alerts_named(fired), now=now)
            alert_deliveries_enqueue(alerts=_alerts_named(revoked), kind=DeliveryKind.REVOKE, now=now)
    return []


def alert_deliveries_sweep(*, now: datetime, lookback: timedelta = SWEEP_LOOKBACK) -> int:
    """Enqueue what the sink did not: recent alerts without any outbox row (a destination made
    after the alert triggered is not sent it), and recent revocations without their follow-up."""
    since = now - lookback
    unsent = Alert.objects.filter(triggered_at__gte=since, triggered_at__lte=now, revoked_at__isnull=True,
                                  destination_deliveries__isnull=True)
    count, after = 0, 0
    # Page through the whole window by id: most alerts match no destination and never get a row,
    # so taking only the first 1,000 would look at the same unmatched ones on every sweep and
    # never reach a newer alert behind them.
    while page := list(unsent.filter(id__gt=after).order_by("id")[:1000]):
        for alert in page:
            count += alert_deliveries_enqueue(alerts=[alert], now=now, created_before=alert.triggered_at)
        after = page[-1].id
    revoke_rows = AlertDelivery.objects.filter(alert=OuterRef("pk"), kind=DeliveryKind.REVOKE)
    fire_rows = AlertDelivery.objects.filter(alert=OuterRef("pk"), kind=DeliveryKind.FIRE)
    missed = Alert.objects.filter(Exists(fire_rows), ~Exists(revoke_rows), revoked_at__gte=since)
    count += alert_deliveries_enqueue(alerts=list(missed[:1000]), kind=DeliveryKind.REVOKE, now=now)
    return count


@dataclass(frozen=True)
class Claimed:
    """Everything one attempt needs, read while claiming: the sender touches no ORM."""

    id: int
    webhook_id: str
    attempts: int
    destination_kind: str
    target: str
    secrets: list[str]
    message: AlertMessage

    def __repr__(self) -> str:  # never the target nor the secrets (a claimed row may reach a log)
        return f"<Claimed delivery {self.id} {self.destination_kind} attempt {self.attempts}>"


def alert_message(alert: Alert, *, kind: str, test: bool = False) -> AlertMessage:
    return AlertMessage(kind=kind, provider=alert.provider, external_id=alert.external_id,
                        symbol=alert.instrument.symbol if alert.instrument_id else "", level=alert.level,
                        headline=alert.headline, description=alert.description, url=alert.url,
                        triggered_at=alert.triggered_at, revoked_at=alert.revoked_at, test=test)


def alert_deliveries_claim(*, now: datetime, limit: int, lease: timedelta = CLAIM_LEASE) -> list[Claimed]:
    """Take up to `limit` due rows for this worker (state `sending` until now + lease). A revoke
    waits while its alert's fire to the same destination is still on its way: follow-ups follow."""
    if limit <= 0:
        return []
    fire_on_its_way = AlertDelivery.objects.filter(
        alert_id=OuterRef("alert_id"), destination_id=OuterRef("destination_id"), kind=DeliveryKind.FIRE,
        state__in=(OutboxState.PENDING, OutboxState.SENDING))
    with transaction.atomic():
        ids = list(AlertDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                   .filter(state__in=(OutboxState.PENDING, OutboxState.SENDING), next_attempt_at__lte=now,
                           destination__enabled=True)
                   .filter(~Q(kind=DeliveryKind.REVOKE) | ~Exists(fire_on_its_way))
                   .order_by("next_attempt_at").values_list("id", flat=True)[:limit])
        if not ids:
            return []
        AlertDelivery.objects.filter(pk__in=ids).update(
            state=OutboxState.SENDING, attempts=F("attempts") + 1, next_attempt_at=now + lease)
        rows = list(AlertDelivery.objects.filter(pk__in=ids)
                    .select_related("alert", "alert__instrument", "destination"))
    return [Claimed(id=row.pk, webhook_id=row.webhook_id, attempts=row.attempts,
                    destination_kind=row.destination.kind, target=row.destination.target,
                    secrets=destination_signing_secrets(row.destination, now=now) if row.destination.secret else [],
                    message=alert_message(row.alert, kind=row.kind)) for row in rows]


def alert_delivery_record(*, claimed: Claimed, outcome: Outcome, now: datetime, status: int | None = None,
                          rng=None) -> str:
    """Record one attempt's outcome; returns the row's new state."""
    with transaction.atomic():
        row = (AlertDelivery.objects.select_for_update().select_related("destination")
               .filter(pk=claimed.id).first())
        if row is None or row.state != OutboxState.SENDING or row.attempts != claimed.attempts:
            return row.state if row else "gone"  # the admin re-sent or deleted it meanwhile
        row.last_status, row.last_error = status, outcome.error[:500]
        if outcome.action == "delivered":
            row.state, row.delivered_at = OutboxState.DELIVERED, now
        elif outcome.action == "retry":
            delay = max(retry_delay(row.attempts, rng=rng), outcome.not_before)
            if now + timedelta(seconds=delay) > row.retry_until:
                row.state, row.last_error = OutboxState.DEAD, f"gave up after {row.attempts} attempts: {outcome.error}"[:500]
            else:
                row.state, row.next_attempt_at = OutboxState.PENDING, now + timedelta(seconds=delay)
        else:
            row.state = OutboxState.DEAD
            if outcome.action == "disable":
                _destination_disable(row.destination, reason=outcome.error)
        row.save(update_fields=["state", "last_status", "last_error", "delivered_at", "next_attempt_at"])
    if row.state == OutboxState.DEAD:
        log.warning("alert delivery %s to destination %s is dead: %s", row.pk, row.destination_id, row.last_error)
    return row.state


def _destination_disable(destination: AlertDestination, *, reason: str) -> None:
    AlertDestination.objects.filter(pk=destination.pk).update(enabled=False, disabled_reason=reason[:200])
    AlertDelivery.objects.filter(destination=destination, state=OutboxState.PENDING).update(
        state=OutboxState.DEAD, last_error=f"destination disabled: {reason}"[:500])


def alert_deliveries_resend(*, ids, now: datetime) -> tuple[int, int]:
    """Dead letters back to pending, with a new day of retries. Returns (re-sent, skipped: their
    destination is disabled, enable it first)."""
    dead = AlertDelivery.objects.filter(pk__in=ids, state=OutboxState.DEAD)
    skipped = dead.filter(destination__enabled=False).count()
    resent = dead.filter(destination__enabled=True).update(
        state=OutboxState.PENDING, next_attempt_at=now, retry_until=now + retry_window(), attempts=0)
    return resent, skipped
