"""The TrendSpottr Alerts API v1.5's eleven methods (../shared/providers/trendspottr-alerts-api.md)
as `AlertsApi`, which `trendspottr.TrendSpottrSimulator` mixes in: per-key accounts holding a
webhook, alerts and delivered notifications, and the parameter checks of the real service (an
ApiError becomes a `status: ERROR` answer). No I/O and no Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from . import trendgen

MAX_OR_CLAUSES = 10
MAX_RECORDS = 50
MAX_OPAQUE_BYTES = 64  # secret and userid: "up to 64 bytes"
STATES = ("active", "paused")


class ApiError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg = code, msg


@dataclass
class Alert:
    alert_id: int
    query_string: str
    userid: str
    level_filter: str
    state: str = "active"
    last_sent_time: int = 0

    def info(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "query_string": self.query_string, "userid": self.userid,
                "state": self.state, "level_filter": self.level_filter, "last_sent_time": self.last_sent_time}


@dataclass
class Account:
    webhook: tuple[str, str] | None = None  # (url, secret)
    alerts: dict[int, Alert] = field(default_factory=dict)
    notifications: dict[int, dict[str, Any]] = field(default_factory=dict)  # in delivery order


class AlertsApi:
    """The methods, called as `_api(params)`; the simulator owns the state they work on."""

    api_keys: set[str]
    accounts: dict[str, Account]
    _sent: list[dict[str, Any]]  # every delivered notification, for query lookups
    _alert_ids: Iterator[int]
    _clock: Callable[[], float]

    def _api(self, params: dict[str, str]) -> dict[str, Any]:
        key = params.get("key", "")
        if key not in self.api_keys:
            raise ApiError("TSAPI_BAD_KEY", "A valid API key is required")
        handler = _METHODS.get(params.get("method", ""))
        if handler is None:
            raise ApiError("TSAPI_BAD_METHOD", f"Unknown method: {params.get('method', '')!r}")
        return {"status": "OK", **handler(self, self.accounts.setdefault(key, Account()), params)}

    def _set_webhook(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        url = _text(p, "url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiError("TSAPI_BAD_PARAMETER", "url must be an absolute http(s) URL")
        account.webhook = (url, _text(p, "secret", max_bytes=MAX_OPAQUE_BYTES))
        return {}

    def _get_webhook(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        url, secret = _webhook(account)
        return {"secret": secret, "url": url}

    def _delete_webhook(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        account.webhook = None  # idempotent: the doc documents no error for "nothing to delete"
        return {}

    def _create_alert(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        _webhook(account)  # "this call will fail unless the account ... has a webhook configured"
        query = _query(p)
        level_filter = _choice(p, "level_filter", tuple(trendgen.ALLOWED_LEVELS), default="All")
        # No userid means no multiplexing: the account is the customer, so the pair check still holds.
        userid = _text(p, "userid", default="", max_bytes=MAX_OPAQUE_BYTES)
        if any(a.userid == userid and a.query_string == query for a in account.alerts.values()):
            raise ApiError("TSAPI_DUPLICATE_ALERT", "An alert with this userid and query_string already exists")
        alert = Alert(next(self._alert_ids), query, userid, level_filter)
        account.alerts[alert.alert_id] = alert
        return {"alert_id": alert.alert_id}

    def _delete_alert(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        del account.alerts[_alert(account, p).alert_id]
        return {}

    def _set_alert_state(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        state = _choice(p, "state", STATES)
        _alert(account, p).state = state
        return {}

    def _set_alert_level(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        level_filter = _choice(p, "level_filter", tuple(trendgen.ALLOWED_LEVELS))
        _alert(account, p).level_filter = level_filter
        return {}

    def _get_alert_info(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        return _alert(account, p).info()

    def _recent_for_query(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        # TrendSpottr-wide, not per account: the point is to ask before creating one's own alert.
        wanted, limit = trendgen.query_key(_query(p)), _max_records(p, 5)
        matches = [r for r in reversed(self._sent) if r["query_key"] == wanted]
        return {"recent_alerts": [_summary(r) for r in matches[:limit]]}

    def _recent_alerts(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        alert, limit = _alert(account, p), _max_records(p, 10)
        mine = [r for r in reversed(account.notifications.values()) if r["alert_id"] == alert.alert_id]
        return {"recent_alerts": [_summary(r) for r in mine[:limit]]}

    def _alert_analytics(self, account: Account, p: dict[str, str]) -> dict[str, Any]:
        record = account.notifications.get(_uint(p, "notification_id"))
        if record is None:
            raise ApiError("TSAPI_UNKNOWN_NOTIFICATION", "No delivered alert has this notification_id")
        volume = trendgen.volume_series(record["notification_id"], record["level"], record["sent_time"],
                                        int(self._clock()))
        return {"sent_time": record["sent_time"], "url": record["url"], "volume": volume}


_METHODS: dict[str, Callable[[AlertsApi, Account, dict[str, str]], dict[str, Any]]] = {
    "setWebhook": AlertsApi._set_webhook, "getWebhook": AlertsApi._get_webhook,
    "deleteWebhook": AlertsApi._delete_webhook, "createAlert": AlertsApi._create_alert,
    "deleteAlert": AlertsApi._delete_alert, "setAlertState": AlertsApi._set_alert_state,
    "setAlertLevel": AlertsApi._set_alert_level, "getAlertInfo": AlertsApi._get_alert_info,
    "getRecentAlertsForQuery": AlertsApi._recent_for_query, "getRecentAlerts": AlertsApi._recent_alerts,
    "getAlertAnalytics": AlertsApi._alert_analytics,
}


# -- parameter checks (ApiError on anything the real service would refuse) -----------------------


def _text(p: dict[str, str], name: str, *, default: str | None = None, max_bytes: int | None = None) -> str:
    value = p.get(name, default)
    if value is None or (value == "" and default is None):
        raise ApiError("TSAPI_BAD_PARAMETER", f"Missing parameter: {name}")
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        raise ApiError("TSAPI_BAD_PARAMETER", f"{name} is longer than {max_bytes} bytes")
    return value


def _uint(p: dict[str, str], name: str, default: int | None = None) -> int:
    raw = p.get(name)
    if raw is None and default is not None:
        return default
    if raw is None or not raw.isascii() or not raw.isdigit() or int(raw) >= 2**64:
        raise ApiError("TSAPI_BAD_PARAMETER", f"{name} must be an unsigned 64-bit integer")
    return int(raw)


def _choice(p: dict[str, str], name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    value = p.get(name, default)
    if value not in choices:
        raise ApiError("TSAPI_BAD_PARAMETER", f"{name} must be one of {', '.join(choices)}")
    return value


def _max_records(p: dict[str, str], default: int) -> int:
    value = _uint(p, "max_records", default)
    if not 1 <= value <= MAX_RECORDS:
        raise ApiError("TSAPI_BAD_PARAMETER", f"max_records must be between 1 and {MAX_RECORDS}")
    return value


def _query(p: dict[str, str]) -> str:
    query = _text(p, "query_string")
    clauses = trendgen.or_clauses(query)
    if not query.strip() or not all(clauses):
        raise ApiError("TSAPI_BAD_QUERY", "query_string has an empty clause")
    if len(clauses) > MAX_OR_CLAUSES:
        raise ApiError("TSAPI_BAD_QUERY", f"query_string has more than {MAX_OR_CLAUSES} OR clauses")
    return query


def _alert(account: Account, p: dict[str, str]) -> Alert:
    alert = account.alerts.get(_uint(p, "alert_id"))
    if alert is None:  # another account's alert is just as unknown
        raise ApiError("TSAPI_UNKNOWN_ALERT", "No alert with this alert_id")
    return alert


def _webhook(account: Account) -> tuple[str, str]:
    if account.webhook is None:
        raise ApiError("TSAPI_NO_WEBHOOK", "No webhook has been configured")
    return account.webhook


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("sent_time", "headline", "level", "url")}


def error_payload(exc: ApiError) -> dict[str, Any]:
    return {"status": "ERROR", "error_code": exc.code, "error_msg": exc.msg}
