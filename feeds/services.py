"""Writes on the market-data side (HackSoft style: `<entity>_<action>`, keyword-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.db import IntegrityError, transaction
from django.utils import timezone

import logging

from .events import Event
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


def webhook_delivery_process(*, delivery: WebhookDelivery) -> list[Event]:
    """Turn a stored delivery into alerts, store them and publish them to their audience."""
    from feeds.broadcast import publish_events
    from feeds.providers.trendspottr.webhook import parse_alert_event
    from feeds.store import events_store

    try:
        events = parse_alert_event(delivery.payload, received_at=delivery.received_at)
        new = events_store(events=events) if events else []
        delivery.state = DeliveryState.PROCESSED if events else DeliveryState.IGNORED
        delivery.error = ""
    except Exception as exc:  # stored already: keep it for a retry, never lose it
        delivery.state, delivery.error, new = DeliveryState.FAILED, f"{type(exc).__name__}: {exc}"[:2000], []
    delivery.processed_at = timezone.now()
    delivery.save(update_fields=["state", "error", "processed_at"])
    if new:
        try:
            async_to_sync(publish_events)(new)
        except Exception:  # stored: browsers get it from the snapshot when they resync
            log.exception("could not publish webhook alerts of event %s", delivery.event_id)
    return new
