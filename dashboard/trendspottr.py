"""TrendSpottr services for the team lead's admin: alert definitions and our webhook.

Every change goes to the provider first; the local record changes only after it answered OK,
so a provider error (or an unreachable provider) leaves the local record exactly as it was.
Errors surface as `TrendSpottrAPIError` (with `error_code`/`error_msg` for API errors) or
`WebhookNotConfigured`, for the admin to show.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from django.db import transaction
from django.urls import reverse

from feeds.groups import team_audience
from feeds.models import ProviderAccount, WebhookConfig
from feeds.providers.trendspottr.client import TrendSpottrClient, validate_query
from feeds.providers.trendspottr.webhook import PROVIDER, secret_digest, secret_matches

from .models import Team, TrendAlertDefinition

__all__ = [
    "WebhookNotConfigured", "trendspottr_client", "trend_alert_create", "trend_alert_set_state",
    "trend_alert_set_level", "trend_alert_delete", "trend_alert_sync", "trend_alert_preview", "trend_alert_recent",
    "trend_alert_analytics", "webhook_register", "webhook_remote", "webhook_unregister",
]


class WebhookNotConfigured(Exception):
    """createAlert needs a webhook; configure one first (admin: Webhook configs → register)."""


def trendspottr_client() -> TrendSpottrClient:
    account = ProviderAccount.objects.filter(provider=PROVIDER, enabled=True).first()
    if account is None or not account.api_key:
        raise WebhookNotConfigured("No enabled TrendSpottr account with an API key: set one with "
                                   "`manage.py provider set trendspottr --endpoint URL --api-key KEY`.")
    return TrendSpottrClient(account.api_key, account.endpoint)


def _from_unix(value) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=timezone.utc) if value else None


def trend_alert_create(*, team: Team, query_string: str, level_filter: str) -> TrendAlertDefinition:
    validate_query(query_string)  # before any call
    if not WebhookConfig.objects.filter(provider=PROVIDER).exists():
        raise WebhookNotConfigured("TrendSpottr only creates alerts once a webhook is set: register ours first "
                                   "(admin → Webhook configs → “Register our webhook with TrendSpottr”).")
    with trendspottr_client() as client:
        remote_id = client.create_alert(query_string, level_filter, userid=team_audience(team.id))
    return TrendAlertDefinition.objects.create(team=team, query_string=query_string, level_filter=level_filter,
                                               remote_alert_id=str(remote_id))


def trend_alert_set_state(*, alert: TrendAlertDefinition, state: str) -> None:
    with trendspottr_client() as client:
        client.set_alert_state(int(alert.remote_alert_id), state)
    alert.state = state
    alert.save(update_fields=["state"])


def trend_alert_set_level(*, alert: TrendAlertDefinition, level_filter: str) -> None:
    with trendspottr_client() as client:
        client.set_alert_level(int(alert.remote_alert_id), level_filter)
    alert.level_filter = level_filter
    alert.save(update_fields=["level_filter"])


def trend_alert_delete(*, alert: TrendAlertDefinition) -> None:
    with trendspottr_client() as client:
        client.delete_alert(int(alert.remote_alert_id))
    alert.delete()


def trend_alert_sync(*, alert: TrendAlertDefinition) -> TrendAlertDefinition:
    """Bring the local record in line with what the provider holds (getAlertInfo)."""
    with trendspottr_client() as client:
        info = client.get_alert_info(int(alert.remote_alert_id))
    alert.query_string = info.get("query_string", alert.query_string)
    alert.state = info.get("state", alert.state)
    alert.level_filter = info.get("level_filter", alert.level_filter)
    alert.last_sent_time = _from_unix(info.get("last_sent_time"))
    alert.synced_at = datetime.now(timezone.utc)
    alert.save()
    return alert


def trend_alert_preview(*, query_string: str, max_records: int = 10) -> list[dict]:
    """What TrendSpottr sent recently for a query, before creating an alert for it."""
    with trendspottr_client() as client:
        return client.get_recent_alerts_for_query(query_string, max_records)


def trend_alert_recent(*, alert: TrendAlertDefinition, max_records: int = 20) -> list[dict]:
    with trendspottr_client() as client:
        return client.get_recent_alerts(int(alert.remote_alert_id), max_records)


def trend_alert_analytics(*, notification_id: str) -> dict:
    with trendspottr_client() as client:
        return client.get_alert_analytics(int(notification_id))


@transaction.atomic
def webhook_register(*, public_base_url: str) -> WebhookConfig:
    """Generate a path token and secret, register our URL with setWebhook, then store them.

    Re-registering rotates the secret; the previous one stays accepted until the next rotation,
    so deliveries already in flight (retries) are not refused.
    """
    config = WebhookConfig.objects.filter(provider=PROVIDER).first()
    token = config.path_token if config else secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(32)[:48]  # the API allows up to 64 bytes
    url = public_base_url.rstrip("/") + reverse("trendspottr-webhook", kwargs={"token": token})
    with trendspottr_client() as client:
        client.set_webhook(url, secret)
    previous = config.secret_sha256 if config else ""
    config, _ = WebhookConfig.objects.update_or_create(
        provider=PROVIDER,
        defaults={"public_url": url, "path_token": token, "secret_sha256": secret_digest(secret),
                  "previous_secret_sha256": previous},
    )
    return config


def webhook_remote() -> dict:
    """What TrendSpottr holds (getWebhook), without ever returning the secret itself."""
    with trendspottr_client() as client:
        remote = client.get_webhook()
    config = WebhookConfig.objects.filter(provider=PROVIDER).first()
    return {
        "url": WebhookConfig.mask_url(str(remote.get("url", ""))),  # the path token is a credential
        "matches_our_url": bool(config) and remote.get("url") == config.public_url,
        "matches_our_secret": bool(config) and secret_matches(remote.get("secret"), [config.secret_sha256]),
    }


def webhook_unregister() -> None:
    with trendspottr_client() as client:
        client.delete_webhook()
    WebhookConfig.objects.filter(provider=PROVIDER).delete()


DEMO_QUERIES = {"Alpha Desk": "AAPL OR Apple OR iPhone", "Beta Fund": "XOM OR Exxon OR JPM"}


def trendspottr_demo_setup(*, public_base_url: str) -> None:
    """Embedded demo: register our webhook with the (fresh) simulator and one alert per demo team.
    Earlier demo definitions point at a previous simulator's ids, so they are replaced."""
    webhook_register(public_base_url=public_base_url)
    TrendAlertDefinition.objects.all().delete()
    for team in Team.objects.filter(name__in=DEMO_QUERIES):
        trend_alert_create(team=team, query_string=DEMO_QUERIES[team.name], level_filter="All")
