"""Writes on the market-data side (HackSoft style: `<entity>_<action>`, keyword-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import FeedStatus, ProviderAccount


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
) -> None:
    FeedStatus.objects.update_or_create(
        account_id=account_id,
        defaults={
            "state": state,
            "last_message_at": last_message_at,
            "messages": messages,
            "parse_errors": parse_errors,
            "reconnects": reconnects,
            "last_error": last_error[:2000],
            "details": details,
        },
    )


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
