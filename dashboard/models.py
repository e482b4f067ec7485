"""People side: teams, who belongs to them, and the watchlists they share."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from feeds.crypto import EncryptedTextField
from feeds.models import Instrument


class Team(models.Model):
    name = models.CharField(max_length=120, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Watchlist(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="watchlists")
    name = models.CharField(max_length=120)
    instruments = models.ManyToManyField(Instrument, through="WatchlistItem", related_name="watchlists")

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="watchlist_name_unique_in_team")]

    def __str__(self) -> str:
        return f"{self.team}: {self.name}"


class WatchlistItem(models.Model):
    watchlist = models.ForeignKey(Watchlist, on_delete=models.CASCADE, related_name="items")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="watchlist_items")
    position = models.PositiveIntegerField(default=0)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["watchlist", "instrument"], name="watchlist_item_unique")]


class LevelFilter(models.TextChoices):
    ALL = "All"
    HIGH_AND_EXTREME = "HighAndExtreme", "High and Extreme"
    EXTREME_ONLY = "ExtremeOnly", "Extreme only"


class TrendAlertState(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"


class TrendAlertDefinition(models.Model):
    """A TrendSpottr alert query owned by a team. The team is sent to TrendSpottr as `userid`
    (its audience key), so one TrendSpottr account serves every team and each delivered alert
    lands on the owning team's desk. Changes go through dashboard.trendspottr (the provider
    first; the local record only when the provider said OK)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="trend_alerts")
    query_string = models.CharField(max_length=1000, help_text="Up to 10 OR clauses, e.g. AAPL OR Apple OR iPhone.")
    level_filter = models.CharField(max_length=16, choices=LevelFilter.choices, default=LevelFilter.ALL)
    state = models.CharField(max_length=8, choices=TrendAlertState.choices, default=TrendAlertState.ACTIVE)
    remote_alert_id = models.CharField(max_length=20, blank=True, help_text="TrendSpottr's alert_id (64-bit).")
    last_sent_time = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "query_string"], name="trend_alert_unique_per_team")]
        verbose_name = "TrendSpottr alert"

    def __str__(self) -> str:
        return f"{self.query_string} ({self.team})"


class AlertAcknowledgement(models.Model):
    """A user has seen and dealt with an alert (the inbox hides or dims it)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_acks")
    alert = models.ForeignKey("feeds.Alert", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "alert"], name="alert_ack_unique")]


class Preferences(models.Model):
    """Per-user settings: display time zone, theme, and which alerts raise a desktop notification."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    time_zone = models.CharField(max_length=64, blank=True, help_text="IANA name, e.g. Europe/London; blank: the browser's.")
    theme = models.CharField(max_length=8, choices=[("dark", "Dark"), ("light", "Light")], default="dark")
    notify_knowsis_credible = models.BooleanField(default=True, help_text="Knowsis alerts with high credibility.")
    notify_trendspottr_level = models.CharField(
        max_length=16, blank=True, choices=[("", "Never"), ("Elevated", "Elevated and up"), ("High", "High and up"),
                                             ("Extreme", "Extreme only")], default="High")
    notify_sound = models.BooleanField(default=False)


class RuleKind(models.TextChoices):
    PRICE_ABOVE = "price_above", "Price crosses above"
    PRICE_BELOW = "price_below", "Price crosses below"
    CHANGE_BEYOND = "change_beyond", "Change % beyond ±"
    SENTIMENT_ABOVE = "sentiment_above", "Sentiment above"
    SENTIMENT_BELOW = "sentiment_below", "Sentiment below"
    VOLUME_SPIKE = "volume_spike", "Conversation volume × its recent average"
    NEWS_SCORE = "news_score", "News with |score| above"


class AlertRule(models.Model):
    """A rule a team (or one user, if `owner` is set) keeps on a watchlist or one instrument.
    Matching is pure (dashboard.alert_rules.rule_fires); a fired rule becomes an Alert."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="alert_rules")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="alert_rules", help_text="Set for a personal rule; blank: the whole team.")
    watchlist = models.ForeignKey(Watchlist, on_delete=models.CASCADE, null=True, blank=True, related_name="rules")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, null=True, blank=True, related_name="rules")
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
    threshold = models.FloatField()
    provider = models.CharField(max_length=32, blank=True, help_text="Sentiment rules: whose sentiment (own scale).")
    cooldown_seconds = models.PositiveIntegerField(default=300, help_text="Quiet time after firing, per instrument.")
    enabled = models.BooleanField(default=True)
    last_fired = models.JSONField(default=dict, blank=True, help_text="Instrument id -> last firing (ISO time).")

    class Meta:
        constraints = [models.CheckConstraint(
            condition=models.Q(watchlist__isnull=False) | models.Q(instrument__isnull=False), name="rule_has_scope")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.threshold:g}"


# --- Alert destinations and their delivery outbox (dashboard/destinations.py, delivery.py) ---------------

class DestinationKind(models.TextChoices):
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams workflow webhook"
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook (Standard Webhooks, signed)"


class KnowsisCredibility(models.TextChoices):
    OFF = "", "No Knowsis alerts"
    ANY = "unknown", "Any credibility"
    MEDIUM = "medium", "Medium and high"
    HIGH = "high", "High only"


class TrendLevel(models.TextChoices):
    OFF = "", "No TrendSpottr alerts"
    ELEVATED = "Elevated", "Elevated and up"
    HIGH = "High", "High and up"
    EXTREME = "Extreme", "Extreme only"


class AlertDestination(models.Model):
    """Where a team's (owners manage) or one user's alerts are sent. The URL or address and the
    webhook secrets are encrypted at rest and never rendered again after saving: `target_hint` is
    what pages and the admin show. Rule alerts go to the destinations their rule chose (`rules`);
    provider alerts by this destination's own level filters."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_destinations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="alert_destinations")
    kind = models.CharField(max_length=8, choices=DestinationKind.choices)
    name = models.CharField(max_length=120)
    target = EncryptedTextField(help_text="Webhook URL or e-mail address (encrypted; never shown again).")
    target_hint = models.CharField(max_length=200, blank=True, help_text="The target, masked, for display.")
    # Standard Webhooks: `whsec_` + base64 key. During a rotation the previous key signs too until
    # `previous_secret_until`, so a receiver can switch keys without rejecting a delivery.
    secret = EncryptedTextField(blank=True)
    previous_secret = EncryptedTextField(blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    knowsis_min_credibility = models.CharField(max_length=8, choices=KnowsisCredibility.choices, blank=True)
    trendspottr_min_level = models.CharField(max_length=8, choices=TrendLevel.choices, blank=True)
    rules = models.ManyToManyField(AlertRule, blank=True, related_name="destinations",
                                   help_text="Rules whose alerts come here.")
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, help_text="Why delivery stopped (e.g. 410 Gone).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(
            condition=(models.Q(team__isnull=False, user__isnull=True) | models.Q(team__isnull=True, user__isnull=False)),
            name="destination_has_one_owner")]
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def __repr__(self) -> str:  # never the target nor the secrets
        return f"<AlertDestination {self.pk} {self.kind}>"


class DeliveryKind(models.TextChoices):
    FIRE = "fire"
    REVOKE = "revoke", "revoke (follow-up)"


class OutboxState(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker until next_attempt_at; then due again (the worker died)
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up: the admin's "re-send" puts it back to pending


class AlertDelivery(models.Model):
    """One alert (or its revocation) for one destination: the durable outbox row. Unique per
    (alert, destination, kind), so enqueueing an alert twice is harmless; `uid` is the
    `webhook-id` receivers deduplicate by, the same on every attempt."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    alert = models.ForeignKey("feeds.Alert", on_delete=models.CASCADE, related_name="destination_deliveries")
    destination = models.ForeignKey(AlertDestination, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=8, choices=DeliveryKind.choices, default=DeliveryKind.FIRE)
    state = models.CharField(max_length=10, choices=OutboxState.choices, default=OutboxState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    retry_until = models.DateTimeField(help_text="Past this, a failed attempt is the last (dead letter).")
    last_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Last HTTP status.")
    last_error = models.CharField(max_length=500, blank=True, help_text="Why the last attempt failed (no secrets).")
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["alert", "destination", "kind"], name="alert_delivery_unique")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="alert_delivery_due")]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.kind} of alert {self.alert_id} to destination {self.destination_id}: {self.state}"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.uid.hex}"
