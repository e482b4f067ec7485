"""Tickerwire settings: every value comes from the environment (see the README's table).

Secure by default: DEBUG is off unless asked for, and with DEBUG off the deployment checks
(`manage.py check --deploy --fail-level WARNING`) pass without further configuration.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from project.redisclient import redis_target

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-" + "x" * 20

# Provider credentials are encrypted at rest with these Fernet keys (feeds/crypto.py says why a key of
# its own): the first encrypts, all decrypt. Rotate: new key first, `manage.py provider rotate-keys`,
# then drop the old one. Checked here so a missing or malformed key stops every process at start.
# The embedded demo needs no setup: with DEBUG, a fixed and public development key (so a DEBUG
# database stays readable across restarts). It protects nothing, so it may never encrypt with DEBUG
# off; listed after a real key it still decrypts, to move a demo database to a real key.
DEVELOPMENT_FIELD_ENCRYPTION_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"tickerwire-development-only").digest()).decode()
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS must be set when DEBUG is off (comma-separated Fernet keys, the first "
            "encrypts). Make one with: python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\"")
    FIELD_ENCRYPTION_KEYS = [DEVELOPMENT_FIELD_ENCRYPTION_KEY]
elif FIELD_ENCRYPTION_KEYS[0] == DEVELOPMENT_FIELD_ENCRYPTION_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEYS: the public development key may not come first when DEBUG is off.")
for _position, _key in enumerate(FIELD_ENCRYPTION_KEYS, 1):
    try:
        Fernet(_key)
    except ValueError:  # the message names the position only: never echo a key
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS: key {_position} is not a Fernet key "
                                   "(32 url-safe base64-encoded bytes).") from None

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
if "*" in ALLOWED_HOSTS and not DEBUG:
    # A "*" makes AllowedHostsOriginValidator accept any Origin, i.e. it switches off the
    # WebSocket cross-site hijacking check. Refuse to start rather than run without it.
    raise ImproperlyConfigured("ALLOWED_HOSTS may not contain '*' in production: it disables the WebSocket origin check.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = False

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "axes",  # login throttling and lockout (dashboard/login.py)
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "feeds",
    "dashboard",
]

MIDDLEWARE = [
    # First: /healthz and /readyz answer before the SSL redirect and the Host check (see project/health.py).
    "project.health.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboard.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: turns its lockout signal into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.preferences",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Feed workers write while the server reads: WAL plus IMMEDIATE transactions avoid
    # "database is locked" errors between the processes of the embedded and test setups.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Or Redis Sentinel: the sentinels' host:port list and the name they monitor the primary under;
# every Redis client then follows the current primary (project/redisclient.py, the one place
# clients are built). REDIS_PASSWORD is the primary's and replicas' (a URL carries its own).
REDIS_SENTINELS = env_list("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "") or "mymaster"
REDIS_SENTINEL_PASSWORD = os.environ.get("REDIS_SENTINEL_PASSWORD", "")
REDIS_PASSWORD = os.environ.get("REDIS_PASSWORD", "")
try:
    _redis = redis_target(url=REDIS_URL, sentinels=REDIS_SENTINELS, master=REDIS_SENTINEL_MASTER,
                          password=REDIS_PASSWORD, sentinel_password=REDIS_SENTINEL_PASSWORD)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
# How this process talks to Redis (redis-py 8.1, locked in requirements.txt). The live path
# (feeds/livestore.py) uses these options for its clients:
# - Publishers and position reads never block-read: their read timeout is CHANNEL_LAYER_SEND_TIMEOUT,
#   which is also what detects a Redis that stops answering without closing (black hole).
# - The hub's one pub/sub connection per server process has no read timeout (it idles between
#   events); it PINGs every 30 s, and TCP keepalive (explicit, not redis-py's default) finds a dead
#   peer or a firewall that forgot the flow in idle + interval x count = 45 s
#   (tests/project/test_channel_layer.py idles one past every timeout).
# - A pooled connection idle past the health-check interval is PINGed before reuse, so one that Redis
#   closed (restart, `timeout` config) fails the PING and is replaced instead of failing a publish.
# - CHANNEL_LAYERS keeps Channels' own layer configured on the same Redis for code that wants
#   Channels' group API; no Tickerwire path uses it (bench/README.md: measured and replaced).
def tcp_keepalive_options(*, idle: int, interval: int, count: int) -> dict[int, int]:
    """Socket options by their Linux names; a platform without one keeps its own default."""
    wanted = {"TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": interval, "TCP_KEEPCNT": count}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


CHANNEL_LAYER_BLOCKING_READ = 5  # channels-redis 4.3.0 RedisChannelLayer.brpop_timeout (Channels' own layer)
REDIS_CONNECTION = {
    "socket_timeout": 3 * CHANNEL_LAYER_BLOCKING_READ,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "socket_keepalive_options": tcp_keepalive_options(idle=30, interval=5, count=3),
    "health_check_interval": 25,
    "max_connections": int(os.environ.get("REDIS_MAX_CONNECTIONS", "1000")),
    # A pooled connection to a Redis that restarted fails on its first use: retry that once, at
    # once, on a new connection, rather than fail a browser's handshake or a publish. Timeouts
    # are not retried (a paused Redis would hold a blocking read twice as long).
    "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    "retry_on_error": [RedisConnectionError],
}
if _redis is not None:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_redis.channel_layer_host(REDIS_CONNECTION)],
                # A prefix per deployment (or test run) keeps several on one Redis apart.
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "tickerwire"),
                # Bounded per-socket queue: a browser that cannot keep up loses messages
                # (and resyncs from a snapshot) instead of growing memory without limit.
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# feeds/broadcast.py bounds every publish (a batch of events shares one bound) and, after a publish
# that timed out, waits this long before trying Redis again. Together they keep a stopped or paused
# Redis from holding a feed worker more than a few seconds.
CHANNEL_LAYER_SEND_TIMEOUT = float(os.environ.get("CHANNEL_LAYER_SEND_TIMEOUT", "3"))
CHANNEL_LAYER_RETRY_SECONDS = float(os.environ.get("CHANNEL_LAYER_RETRY_SECONDS", "1"))

# The live path (feeds/livestore.py, feeds/hub.py, feeds/sinks.py; measured in bench/README.md).
# Every stream (an instrument's or an audience's events) keeps its last LIVE_HISTORY_SIZE events
# for LIVE_HISTORY_SECONDS after its latest one: a browser back within that recovers exactly what
# it missed instead of reloading its snapshot.
LIVE_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "tickerwire")
LIVE_HISTORY_SIZE = int(os.environ.get("LIVE_HISTORY_SIZE", "500"))
LIVE_HISTORY_SECONDS = float(os.environ.get("LIVE_HISTORY_SECONDS", "300"))
# Per browser socket: Twisted may hold this many bytes for it before frames wait in its own queue,
# which conflates then drops (counted) past these bounds.
LIVE_SOCKET_BUFFER_BYTES = int(os.environ.get("LIVE_SOCKET_BUFFER_BYTES", str(64 * 1024)))
# The kernel's send buffer per socket (SO_SNDBUF; 0 leaves Linux's autotuning, up to 4 MiB each).
LIVE_SOCKET_KERNEL_BUFFER_BYTES = int(os.environ.get("LIVE_SOCKET_KERNEL_BUFFER_BYTES", str(256 * 1024)))
LIVE_SOCKET_QUEUE_FRAMES = int(os.environ.get("LIVE_SOCKET_QUEUE_FRAMES", "1000"))
LIVE_SOCKET_QUEUE_BYTES = int(os.environ.get("LIVE_SOCKET_QUEUE_BYTES", str(1024 * 1024)))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out account or address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling, per account and per address (either one trips it; dashboard/login.py):
# from the 3rd failure in a row each further try waits 2, 4, 8, … up to 30 s ("slowed"), refused
# without a password check while it waits; the 10th failure locks sign-in for 15 minutes ("locked"),
# which an admin lifts early by deleting the entry under Admin → Axes → Access attempts (or
# `manage.py axes_reset_username NAME`). A success clears the account's count. The address limit
# equals the account limit: an office behind one NAT shares it, which we accept for a desk product.
LOGIN_SLOWDOWN_AFTER_FAILURES = 3
LOGIN_SLOWDOWN_MAX_SECONDS = 30
AXES_FAILURE_LIMIT = 10
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False  # no start-up banner in every process's log; failures and lockouts are still logged
# The address is REMOTE_ADDR: behind the TLS proxy, Daphne's --proxy-headers puts the client's there.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "board"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Front-end packages from npm (package.json; `make demo`/`make test` run `npm ci`), served as our own
    # static files: no CDN at run time.
    ("vendor/lightweight-charts", BASE_DIR / "node_modules" / "lightweight-charts" / "dist"),
]
# Production serves hashed, compressed files collected by `collectstatic`; development and
# tests serve straight from the source folders, so no collect step is needed there.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST

# Transport security: on by default whenever DEBUG is off. Behind a TLS-terminating proxy
# set SECURE_PROXY_SSL_HEADER_NAME (e.g. HTTP_X_FORWARDED_PROTO).
HTTPS = env_bool("HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000" if HTTPS else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if os.environ.get("SECURE_PROXY_SSL_HEADER_NAME"):
    SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER_NAME"], "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Webhook bodies and browser posts are small; refuse big ones early.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

# LOG_FORMAT=json: one JSON object per line for log shippers; anything else: plain text.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "feeds.logging.RedactSecretsFilter"},
        # Counts the messages channels-redis refuses for full channels (it only logs them).
        "layer_drops": {"()": "feeds.metrics.LayerCapacityDrops", "show_from": LOG_LEVEL},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "feeds.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "plain",
                    "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "channels_redis.core": {"level": "INFO", "filters": ["layer_drops"]},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "websockets": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# Feeds know nothing of teams: the dashboard tells them which instruments are watched
# through this dotted path (same mechanism Channels uses for layer backends).
FEEDS_WATCHED_INSTRUMENTS = "dashboard.selectors.instrument_ids_watched"
# Called with every batch of new events after it is stored; may return events to publish.
# The delivery sink comes after the rules: it sees the alerts they fire, and only inserts outbox
# rows (dashboard/delivery.py); `manage.py deliver_alerts` sends them.
FEEDS_EVENT_SINKS = ["dashboard.alert_rules.alert_rules_evaluate", "dashboard.delivery.alert_deliveries_sink"]
# How often a feed worker re-reads the watched set to follow watchlist changes.
FEEDS_WATCH_POLL_SECONDS = float(os.environ.get("FEEDS_WATCH_POLL_SECONDS", "3"))
# A running worker writes its heartbeat about every second; the health page shows its state as
# `stale` once the heartbeat is older than this.
FEEDS_HEARTBEAT_STALE_SECONDS = float(os.environ.get("FEEDS_HEARTBEAT_STALE_SECONDS", "30"))
# Highly available workers (feeds/lease.py): any number of `runfeed <provider>` may run; the one
# holding the account's lease consumes. A standby takes over within lease + poll seconds of the
# holder's death (at once after a clean stop). A standby of a provider without resume stays
# connected and hands the last FEEDS_STANDBY_WINDOW_SECONDS of what it received to the pipeline
# when it takes over (feeds/standby.py): longer than lease + poll, so nothing falls in between.
FEEDS_LEASE_SECONDS = float(os.environ.get("FEEDS_LEASE_SECONDS", "9"))
FEEDS_LEASE_POLL_SECONDS = float(os.environ.get("FEEDS_LEASE_POLL_SECONDS", "1"))
FEEDS_STANDBY_WINDOW_SECONDS = float(os.environ.get("FEEDS_STANDBY_WINDOW_SECONDS", "30"))

# Networks an alert destination (a webhook, Slack or Teams URL) may resolve to besides public
# addresses, e.g. "10.20.0.0/16" for the team's own internal receivers (dashboard/senders.py).
# Loopback, private, link-local and reserved addresses are refused unless listed here.
ALERT_DESTINATION_ALLOWED_NETWORKS = env_list("ALERT_DESTINATION_ALLOWED_NETWORKS")
# E-mail alert destinations go through Django's e-mail backend (`manage.py deliver_alerts` sends).
# SMTP by default; EMAIL_BACKEND=django.core.mail.backends.console.EmailBackend prints instead.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS (port 587)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS (port 465)
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))  # seconds per SMTP step: a dead server ties no worker up
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Tickerwire <alerts@localhost>")

# Prometheus metrics: each process serves its own on METRICS_PORT (unset: none), bound to
# METRICS_BIND (loopback by default: for the operator's scraper, never for users). Each process
# on a machine needs its own port; `runfeed --metrics-port` overrides it per worker.
METRICS_PORT = int(os.environ["METRICS_PORT"]) if os.environ.get("METRICS_PORT") else None
METRICS_BIND = os.environ.get("METRICS_BIND", "127.0.0.1")
# /readyz: how long the database and the channel layer each get to answer.
READYZ_TIMEOUT_SECONDS = float(os.environ.get("READYZ_TIMEOUT_SECONDS", "1"))

# Retention (feeds/retention_policy.py gives each default its reason): ages in days, 0 keeps for ever.
# Applied by `manage.py retention` (a daily timer) and by the feed workers every
# RETENTION_WORKER_INTERVAL_SECONDS (0: never), in transactions of at most RETENTION_BATCH_ROWS rows.
RETENTION_CROWD_MENTION_DAYS = os.environ.get("RETENTION_CROWD_MENTION_DAYS", "7")  # raw mentions: deleted
RETENTION_SENTIMENT_HOURLY_AFTER_DAYS = os.environ.get("RETENTION_SENTIMENT_HOURLY_AFTER_DAYS", "30")
RETENTION_SENTIMENT_DAILY_AFTER_DAYS = os.environ.get("RETENTION_SENTIMENT_DAILY_AFTER_DAYS", "365")
RETENTION_SECOND_BARS_DAYS = os.environ.get("RETENTION_SECOND_BARS_DAYS", "7")  # 1s bars -> 1m
RETENTION_MINUTE_BARS_DAYS = os.environ.get("RETENTION_MINUTE_BARS_DAYS", "30")  # 1m..30m bars -> 1h
RETENTION_HOUR_BARS_DAYS = os.environ.get("RETENTION_HOUR_BARS_DAYS", "365")  # 1h..12h bars -> 1D
RETENTION_NEWS_DAYS = os.environ.get("RETENTION_NEWS_DAYS", "730")
RETENTION_ALERT_DAYS = os.environ.get("RETENTION_ALERT_DAYS", "730")
RETENTION_WEBHOOK_DELIVERY_DAYS = os.environ.get("RETENTION_WEBHOOK_DELIVERY_DAYS", "90")
RETENTION_BATCH_ROWS = int(os.environ.get("RETENTION_BATCH_ROWS", "10000"))
RETENTION_WORKER_INTERVAL_SECONDS = float(os.environ.get("RETENTION_WORKER_INTERVAL_SECONDS", "3600"))


def _check_retention_policy() -> None:
    """A malformed policy stops every process at start, not the first run hours later."""
    from feeds.retention_policy import PolicyError, policy_from_settings  # pure: imports nothing of Django's

    try:
        policy_from_settings(globals())
    except PolicyError as exc:
        raise ImproperlyConfigured(str(exc)) from None


_check_retention_policy()
