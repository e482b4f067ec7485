"""TrendSpottr webhook bodies: authenticate, strip the secret, parse. Pure: no I/O, no clock.

Wire reference: ../shared/providers/trendspottr-alerts-api.md ("Webhook"). The shared secret
travels inside the JSON body (no signature, no timestamp): one logged or stored payload would
reveal it, so it is checked in constant time on bytes and removed before anything is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, timezone
from typing import Any

from feeds.events import Alert
from feeds.providers.base import UnsupportedMessage

__all__ = ["PROVIDER", "MAX_SECRET_BYTES", "MAX_DEPTH", "secret_digest", "secret_matches", "without_secret", "event_id_of",
           "check_storable", "parse_alert_event"]

PROVIDER = "trendspottr"
MAX_SECRET_BYTES = 64  # the API's own limit for setWebhook's secret
LEVELS = ("Elevated", "High", "Extreme")
UINT64_MAX = 2**64 - 1
MAX_DEPTH = 32  # a real delivery nests 3 levels; deeper only costs (json.dumps recurses on save)


def secret_digest(secret: str) -> str:
    """What we store instead of the secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(supplied: Any, accepted_digests: list[str]) -> bool:
    """Constant-time check of the body's secret against the current (and previous) secret digest.

    Robust to whatever a stranger sends: a missing, non-string, non-ASCII or huge value is a
    plain mismatch, never an exception (`compare_digest` raises on non-ASCII str, so bytes are
    compared).
    """
    if not isinstance(supplied, str):
        return False
    supplied_bytes = supplied.encode("utf-8", errors="replace")
    if len(supplied_bytes) > MAX_SECRET_BYTES:
        return False
    digest = hashlib.sha256(supplied_bytes).hexdigest().encode()
    matched = False
    for expected in accepted_digests:
        if expected:
            matched |= hmac.compare_digest(digest, expected.encode("ascii", errors="replace"))
    return matched


def without_secret(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "secret"}


def check_storable(payload: Any) -> None:
    """Refuse what PostgreSQL's jsonb cannot hold as received, so storing it cannot fail: NUL
    characters and lone surrogates ("\\u0000", "\\ud800" are valid JSON escapes), non-finite
    numbers (1e400 reads as inf), and nesting past MAX_DEPTH. Iterative: no recursion to exhaust.

    Raises:
        UnsupportedMessage: with what was refused.
    """
    pending = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise UnsupportedMessage(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise UnsupportedMessage("a number out of range")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise UnsupportedMessage("a NUL character in a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsupportedMessage("a lone surrogate in a string") from exc


def _uint64(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise UnsupportedMessage(f"{field} is not an unsigned 64-bit integer: {value!r}")
    return str(value)


def event_id_of(payload: dict[str, Any]) -> str:
    return _uint64(payload.get("event_id"), "event_id")


def _text(data: dict, key: str, limit: int) -> str:
    value = data.get(key)
    return value[:limit] if isinstance(value, str) else ""


def _http_url(value: str) -> str:
    return value if value.startswith(("https://", "http://")) else ""


def _unix_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # past year 9999: not a time we can keep
        return None


def parse_alert_event(payload: dict[str, Any], *, received_at: datetime) -> list[Alert]:
    """An `alert` event -> one Alert for the audience named by `userid`.

    Returns [] for other event types (authenticated, stored, not handled).
    Raises:
        UnsupportedMessage: an alert event without the documented fields.
    """
    if payload.get("type") != "alert":
        return []
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("type", "alert") != "alert":
        raise UnsupportedMessage("alert event without an alert data object")
    notification_id = _uint64(data.get("notification_id"), "notification_id")
    level = data.get("level")
    if level not in LEVELS:
        raise UnsupportedMessage(f"unknown level {level!r}")
    triggered_at = _unix_time(payload.get("created")) or received_at
    hashtags = data.get("related_hashtags") if isinstance(data.get("related_hashtags"), list) else []
    return [Alert(
        provider=PROVIDER, code=_uint64(data.get("alert_id"), "alert_id"), received_at=received_at,
        external_id=notification_id, notification_id=notification_id, triggered_at=triggered_at, level=level,
        headline=_text(data, "headline", 1000), description=_text(data, "description", 4000),
        url=_http_url(_text(data, "url", 1000)), thumbnail_url=_http_url(_text(data, "thumbnail_url", 1000)),
        related_hashtags=tuple(str(tag)[:100] for tag in hashtags[:5] if isinstance(tag, str)),
        audience=_text(data, "userid", 64),
    )]
