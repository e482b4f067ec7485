"""Market-data side: instruments, provider accounts, feed health and what the feeds delivered.

Every stored event has a unique constraint on its natural key, so a redelivered event (a
reconnect overlap, a webhook retry) is absorbed by the database rather than stored twice.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.db.models.functions import Collate, Upper

from .crypto import EncryptedTextField
from .logging import mask_webhook_path


class Provider(models.TextChoices):
    STOCKNEWS = "stocknews", "StockNews.live"
    INSIGHTSENTRY = "insightsentry", "InsightSentry"
    KNOWSIS = "knowsis", "Knowsis"
    STOCKTWITS = "stocktwits", "StockTwits Firehose"
    TRENDSPOTTR = "trendspottr", "TrendSpottr"
    RULES = "rules", "Alert rules"


class Instrument(models.Model):
    symbol = models.CharField(max_length=32, unique=True, help_text="Canonical ticker, e.g. AAPL.")
    exchange = models.CharField(max_length=32, blank=True)
    name = models.CharField(max_length=200, blank=True)
    insightsentry_code = models.CharField(max_length=64, blank=True, help_text="EXCHANGE:SYMBOL, e.g. NASDAQ:AAPL.")
    knowsis_channel = models.CharField(max_length=128, blank=True, help_text="The asset's websocket_channel.")
    stocktwits_symbol = models.CharField(max_length=32, blank=True, help_text="Plain ticker; crypto as BTC.X.")
    stocknews_ticker = models.CharField(max_length=32, blank=True, help_text="Plain ticker.")

    class Meta:
        ordering = ["symbol"]
        # The board's add box (dashboard.selectors.instrument_search) on PostgreSQL: a prefix of the
        # symbol or of the name in any case, and a prefix of any word of the name. Built only there
        # (migration 0010); SQLite cannot use an index for these and scans the table instead.
        indexes = [
            models.Index(Collate(Upper("symbol"), "C"), name="instrument_symbol_prefix"),
            models.Index(Collate(Upper("name"), "C"), name="instrument_name_prefix"),
            GinIndex(SearchVector("name", config="simple"), name="instrument_name_words"),
        ]

    def __str__(self) -> str:
        return self.symbol

    def code_for(self, provider: str) -> str:
        """This instrument's code at `provider` ("" when it has none)."""
        return {
            Provider.STOCKNEWS: self.stocknews_ticker,
            Provider.INSIGHTSENTRY: self.insightsentry_code,
            Provider.KNOWSIS: self.knowsis_channel,
            Provider.STOCKTWITS: self.stocktwits_symbol,
        }.get(provider, "")


PROVIDER_CODE_FIELD = {
    Provider.STOCKNEWS: "stocknews_ticker",
    Provider.INSIGHTSENTRY: "insightsentry_code",
    Provider.KNOWSIS: "knowsis_channel",
    Provider.STOCKTWITS: "stocktwits_symbol",
}

SECRET_FIELDS = ("token", "api_key", "password", "secret")


class ProviderAccount(models.Model):
    """Credentials for one provider. Secret fields are encrypted at rest (feeds/crypto.py) and
    write-only in the admin and `provider list`: see `masked()`."""

    provider = models.CharField(max_length=32, choices=Provider.choices, unique=True)
    endpoint = models.CharField(max_length=500, help_text="ws(s):// or http(s):// URL of the provider.")
    token = EncryptedTextField(blank=True)
    api_key = EncryptedTextField(blank=True)
    username = models.CharField(max_length=200, blank=True)
    password = EncryptedTextField(blank=True)
    secret = EncryptedTextField(blank=True)
    enabled = models.BooleanField(default=True)
    options = models.JSONField(default=dict, blank=True, help_text="Provider-specific settings.")

    def __str__(self) -> str:
        return self.get_provider_display()

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"<ProviderAccount {self.provider} enabled={self.enabled}>"

    @staticmethod
    def mask(value: str) -> str:
        if not value:
            return "not set"
        return f"set, ends {value[-4:]}" if len(value) >= 12 else "set"

    def masked(self, field: str) -> str:
        return self.mask(getattr(self, field))


class FeedState(models.TextChoices):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"  # connected, but what arrives cannot be stored (see last_error)
    BACKING_OFF = "backing_off"
    AUTH_FAILED = "auth_failed"
    REFUSED = "refused"  # the provider rejects our request as malformed: a client bug to fix
    DISABLED = "disabled"
    STOPPED = "stopped"


class FeedStatus(models.Model):
    account = models.OneToOneField(ProviderAccount, on_delete=models.CASCADE, related_name="status")
    state = models.CharField(max_length=16, choices=FeedState.choices, default=FeedState.STOPPED)
    last_message_at = models.DateTimeField(null=True, blank=True)
    messages = models.BigIntegerField(default=0)
    parse_errors = models.BigIntegerField(default=0)
    reconnects = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="E.g. subscription expiry, stream cursor.")
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the running worker about every second (any save touches updated_at, so it is
    # not a sign of life); the health page shows a live state as stale when this stops moving.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "feed statuses"

    def __str__(self) -> str:
        return f"{self.account}: {self.state}"


class FeedLease(models.Model):
    """Which worker consumes a provider account's feed (feeds/lease.py).

    Expiry is the database's clock, never a worker's. `token` grows by one at every acquisition:
    the holder's store transactions check it (a fence), so a worker that lost its lease can
    commit nothing, whatever its own clock or a pause says."""

    account = models.OneToOneField(ProviderAccount, on_delete=models.CASCADE, related_name="lease")
    holder = models.CharField(max_length=200, blank=True, help_text="host:pid:nonce of the holding worker.")
    token = models.BigIntegerField(default=0)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.account}: {self.holder or 'free'}"


class WorkerRole(models.TextChoices):
    HOLDER = "holder"
    STANDBY = "standby"


class FeedWorker(models.Model):
    """A running `runfeed` process, holding the lease or standing by; its heartbeat shows it alive."""

    account = models.ForeignKey(ProviderAccount, on_delete=models.CASCADE, related_name="workers")
    identity = models.CharField(max_length=200, unique=True)
    role = models.CharField(max_length=16, choices=WorkerRole.choices, default=WorkerRole.STANDBY)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.identity} ({self.role})"


class Quote(models.Model):
    """The latest quote per instrument and provider (upserted, never appended)."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="quotes")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    price = models.FloatField(null=True)
    change = models.FloatField(null=True)
    change_percent = models.FloatField(null=True)
    bid = models.FloatField(null=True)
    ask = models.FloatField(null=True)
    volume = models.FloatField(null=True)
    delay_seconds = models.IntegerField(default=0)
    ts = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instrument", "provider"], name="quote_latest_per_provider")]


class Bar(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="bars")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    interval = models.CharField(max_length=16, help_text="E.g. 1m, 5m, 1h, 1d.")
    start = models.DateTimeField()
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instrument", "provider", "interval", "start"], name="bar_unique_start")
        ]
        # An instrument's newest bars whatever the provider or interval (the board's sparkline, the
        # instrument page's chart): the unique index above cannot give them without a sort.
        indexes = [models.Index(fields=["instrument", "-start"], name="bar_instrument_newest")]


class SentimentSample(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="sentiment")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    external_id = models.CharField(max_length=128)
    ts = models.DateTimeField()
    score = models.FloatField(null=True, help_text="On the provider's own scale, see `scale`.")
    raw_score = models.CharField(max_length=64, blank=True)
    scale = models.CharField(max_length=32, blank=True)
    volume = models.FloatField(null=True, help_text="Conversation volume, where the provider gives one.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "external_id", "instrument"], name="sentiment_unique")
        ]
        indexes = [models.Index(fields=["instrument", "provider", "-ts"])]


class NewsItem(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="news")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    external_id = models.CharField(max_length=255)
    headline = models.TextField()
    summary = models.TextField(blank=True)
    url = models.URLField(max_length=1000, blank=True)
    category = models.CharField(max_length=64, blank=True)
    sentiment = models.FloatField(null=True, help_text="Normalised to -100..100.")
    raw_sentiment = models.CharField(max_length=64, blank=True)
    sentiment_label = models.CharField(max_length=32, blank=True)
    confidence = models.FloatField(null=True, help_text="Normalised to 0..100.")
    key_factors = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=200, blank=True)
    price = models.FloatField(null=True)
    published_at = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "external_id", "instrument"], name="news_unique")]
        indexes = [models.Index(fields=["instrument", "-published_at"])]


class Alert(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="alerts", null=True, blank=True)
    provider = models.CharField(max_length=32, choices=Provider.choices)
    external_id = models.CharField(max_length=255)
    audience = models.CharField(max_length=64, blank=True, db_index=True,
                                help_text="Who the alert is for when not an instrument's watchers (e.g. team-3).")
    level = models.CharField(max_length=32, blank=True, help_text="Credibility or level, as the provider says.")
    headline = models.TextField(blank=True)
    description = models.TextField(blank=True)
    url = models.URLField(max_length=1000, blank=True)
    thumbnail_url = models.URLField(max_length=1000, blank=True)
    related_hashtags = models.JSONField(default=list, blank=True)
    notification_id = models.CharField(max_length=20, blank=True, help_text="TrendSpottr's id of the delivered alert.")
    triggered_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Set when the provider withdrew the alert.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "external_id"], name="alert_unique")]
        # Retention deletes a provider's oldest alerts (feeds/retention.py); many have no instrument.
        indexes = [models.Index(fields=["provider", "triggered_at"], name="alert_provider_triggered")]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class CrowdMention(models.Model):
    """One firehose message about one symbol. The unique key makes a resumed stream's overlap
    harmless; per-minute crowd sentiment is computed from these rows, never incremented."""

    provider = models.CharField(max_length=32, choices=Provider.choices)
    message_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    instrument = models.ForeignKey(Instrument, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()
    score = models.FloatField(null=True)
    user_id = models.CharField(max_length=64, blank=True)
    seq_id = models.TextField(help_text="Opaque stream position; text, never a number.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "message_id", "symbol"], name="crowd_mention_unique")]
        indexes = [models.Index(fields=["instrument", "created_at"])]


class StreamCursor(models.Model):
    """Where a resumable stream stands, written in the same transaction as what it covers."""

    provider = models.CharField(max_length=32, choices=Provider.choices, unique=True)
    position = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.provider} at {self.position}"


class WebhookConfig(models.Model):
    """Where a provider posts to us. The path token makes the URL unguessable; the body secret
    (and the previous one, during a rotation) is checked on every delivery.

    What we only verify is stored as a digest: the body secrets (SHA-256). What we must send again
    is encrypted (feeds/crypto.py): the path token and the URL holding it, because re-registering
    (a secret rotation) keeps the URL, so deliveries already queued at the provider still reach us.
    The row is found by provider (one per provider) and the token compared in constant time, so
    nothing needs to look a row up by token. Pages show the URL through `masked_url` only."""

    provider = models.CharField(max_length=32, choices=Provider.choices, unique=True)
    public_url = EncryptedTextField(help_text="Our webhook URL as the provider must call it (holds the path token).")
    path_token = EncryptedTextField()
    secret_sha256 = models.CharField(max_length=64)
    previous_secret_sha256 = models.CharField(max_length=64, blank=True)
    registered_at = models.DateTimeField(auto_now=True)

    def __repr__(self) -> str:
        return f"<WebhookConfig {self.provider}>"

    @staticmethod
    def mask_url(url: str) -> str:
        """A webhook URL with its path token hidden (the logs mask it the same way)."""
        return mask_webhook_path(url)

    @property
    def masked_url(self) -> str:
        return self.mask_url(self.public_url)


class DeliveryState(models.TextChoices):
    STORED = "stored"
    PROCESSED = "processed"
    IGNORED = "ignored"  # authenticated, but a type we do not handle
    FAILED = "failed"  # stored; processing raised: `manage.py process_webhooks` retries


class WebhookDelivery(models.Model):
    """One received webhook event, stored before we answer. The unique event id makes a retried
    or duplicated delivery harmless, even when two arrive at once."""

    provider = models.CharField(max_length=32, choices=Provider.choices)
    event_id = models.CharField(max_length=20, help_text="Unsigned 64-bit id, kept as digits.")
    payload = models.JSONField(help_text="As received, with the secret removed.")
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.STORED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_delivery_unique")]
        # Retention deletes a provider's oldest processed deliveries (feeds/retention.py).
        indexes = [models.Index(fields=["provider", "received_at"], name="webhook_delivery_received")]
        verbose_name_plural = "webhook deliveries"


class RetentionRun(models.Model):
    """What one retention run did (feeds/retention.py), for the admin's retention page. The newest
    few hundred are kept; dry runs are not recorded (they change nothing)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    origin = models.CharField(max_length=64, help_text="command, or worker:<provider>.")
    provider = models.CharField(max_length=32, blank=True, help_text="Whose rows; blank: everyone's.")
    ok = models.BooleanField(default=True)
    summary = models.JSONField(default=dict, help_text="Per step: cutoff, rows deleted and written, batches.")

    class Meta:
        ordering = ["-started_at"]
        verbose_name_plural = "retention: policy and runs"

    def __str__(self) -> str:
        return f"{self.origin} at {self.started_at:%Y-%m-%d %H:%M}"
