"""Writes on the market-data side (HackSoft style: `<entity>_<action>`, keyword-only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.db import IntegrityError, transaction
from django.utils import timezone

import logging

from .models import DeliveryState, FeedStatus, ProviderAccount, WebhookDelivery


def feed_status_update(
    *,
    account_id: int,
    state: str,
    last_message_at: datetime | None,
    messages: int,
    parse_errors: int,
    reconnects: int,
    last_error: str,
    details: dict[str, Any],
    heartbeat_at: datetime | None = None,
) -> dict[str, Any]:
    """Store a worker's status; returns it as the health page shows it. A running worker
    passes `heartbeat_at` (now) with every write; None keeps the last one."""
    from .selectors import feed_status_message

    row, _ = FeedStatus.objects.update_or_create(
        account_id=account_id,
        defaults={
            "state": state,
            "last_message_at": last_message_at,
            "messages": messages,
            "parse_errors": parse_errors,
            "reconnects": reconnects,
            "last_error": last_error[:2000],
            "details": details,
            **({"heartbeat_at": heartbeat_at} if heartbeat_at else {}),
        },
    )
    return feed_status_message(row)


log = logging.getLogger(__name__)

SECRET_OPTIONS = ("token", "api_key", "password", "secret")


def provider_account_set(
    *,
    provider: str,
    endpoint: str | None = None,
    enabled: bool | None = None,
    username: str | None = None,
    **secrets: str | None,
) -> ProviderAccount:
    """Create or update an account; a secret left as None keeps its stored value."""
    unknown = set(secrets) - set(SECRET_OPTIONS)
    if unknown:
        raise TypeError(f"unknown credential fields: {sorted(unknown)}")
    account = ProviderAccount.objects.filter(provider=provider).first() or ProviderAccount(provider=provider)
    if endpoint is not None:
        account.endpoint = endpoint
    if enabled is not None:
        account.enabled = enabled
    if username is not None:
        account.username = username
    for field, value in secrets.items():
        if value is not None:
            setattr(account, field, value)
    if not account.endpoint:
        raise ValueError("an endpoint is required")
    account.full_clean()
    account.save()
    return account


def webhook_delivery_store(*, provider: str, event_id: str, payload: dict) -> tuple[WebhookDelivery, bool]:
    """Store a delivery (secret already removed). Returns `(delivery, created)`; a duplicate
    event id, even one racing in at the same moment, comes back with `created=False`."""
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(provider=provider, event_id=event_id, payload=payload), True
    except IntegrityError:
        return WebhookDelivery.objects.get(provider=provider, event_id=event_id), False


PENDING_DELIVERY_STATES = (DeliveryState.STORED, DeliveryState.FAILED)


def webhook_delivery_process(*, delivery_id: int) -> str | None:
    """Turn one stored delivery into alerts, store them and publish them to their audience.

    Exactly once however many processes try at the same moment (the receiving process after its
    response, another's retry sweep, `manage.py process_webhooks`): the row is claimed with
    SELECT ... FOR UPDATE SKIP LOCKED in the one transaction that stores its alerts and its new
    state, so a second claimant skips it, and a crash before the commit leaves it pending for the
    next run. Returns the new state, or None when there was nothing to do (done, or held elsewhere).
    Publishing follows the commit: at most once, like every layer delivery (browsers resync).
    """
    from feeds.broadcast import publish_events
    from feeds.providers.trendspottr.webhook import parse_alert_event
    from feeds.store import events_store

    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True)
                    .filter(pk=delivery_id, state__in=PENDING_DELIVERY_STATES).first())
        if delivery is None:
            return None
        try:
            with transaction.atomic():  # a savepoint: a failed insert is undone, its failure still recorded
                events = parse_alert_event(delivery.payload, received_at=delivery.received_at)
                new = events_store(events=events) if events else []
            delivery.state = DeliveryState.PROCESSED if events else DeliveryState.IGNORED
            delivery.error = ""
        except Exception as exc:  # stored already: keep it, with its error, for a retry
            delivery.state, delivery.error, new = DeliveryState.FAILED, f"{type(exc).__name__}: {exc}"[:2000], []
            log.warning("webhook event %s failed; kept for a retry: %s", delivery.event_id, delivery.error)
        delivery.processed_at = timezone.now()
        delivery.save(update_fields=["state", "error", "processed_at"])
    if new:
        try:
            async_to_sync(publish_events)(new)
        except Exception:  # stored: browsers get it from the snapshot when they resync
            log.exception("could not publish webhook alerts of event %s", delivery.event_id)
    return delivery.state


def webhook_deliveries_due(*, now: datetime, retry_after: timedelta, give_up_after: timedelta) -> list[int]:
    """Ids of the deliveries a retry sweep should process now, oldest first.

    A row still `stored` after `retry_after` was lost between store and process (a crash, a
    restart): always due. A `failed` one waits as long as it has been failing, at least
    `retry_after` (1, 2, 4, 8 ... minutes), and only for `give_up_after` from its arrival; later
    only `manage.py process_webhooks` or the admin retries it.
    """
    stored = WebhookDelivery.objects.filter(state=DeliveryState.STORED, received_at__lte=now - retry_after)
    failed = WebhookDelivery.objects.filter(state=DeliveryState.FAILED, received_at__gte=now - give_up_after,
                                            processed_at__lte=now - retry_after)
    due = list(stored.values_list("id", "received_at"))
    for pk, received_at, processed_at in failed.values_list("id", "received_at", "processed_at"):
        if now - processed_at >= processed_at - received_at:
            due.append((pk, received_at))
    return [pk for pk, _ in sorted(due, key=lambda row: row[1])]
