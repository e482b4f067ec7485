"""A small typed sync client for the TrendSpottr Alerts API v1.5 (for the Django admin).

Wire reference: ../shared/providers/trendspottr-alerts-api.md. One endpoint, `<base>/v1.5/alerts`;
every argument, the API key included, is a URL parameter. The doc never says how a method is
selected, so we send its documented name as the `method` URL parameter (`method=createAlert`)
and our simulator (feeds/simulators/trendspottr.py) routes on it. Reads use GET; writes use POST
with the parameters still in the query string ("sent as normal url parameters") and no body.

The service answers HTTP 200 even for failures, so `status` decides:
    "ERROR"                          -> TrendSpottrError(error_code, error_msg)
    any HTTP status but 200          -> TrendSpottrHTTPError(status_code)
    not UTF-8 JSON, not an object,
    or fields of the wrong type      -> TrendSpottrProtocolError
    network error or timeout         -> TrendSpottrUnavailable (the httpx error as `.error`)
all subclasses of TrendSpottrAPIError. Bad arguments raise ValueError before any request.
The API key never reaches a log line or an exception message: the URL carrying it is never
quoted, and the key is registered with feeds.logging so any stray mention is masked.
No Django here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any, Mapping, TypedDict

import httpx

from feeds.logging import RedactSecretsFilter, redact, register_secret

__all__ = [
    "TrendSpottrClient", "validate_query", "TrendSpottrAPIError", "TrendSpottrError", "TrendSpottrHTTPError",
    "TrendSpottrProtocolError", "TrendSpottrUnavailable", "Webhook", "AlertInfo", "RecentAlert",
    "VolumePoint", "AlertAnalytics", "LEVEL_FILTERS", "STATES", "DEFAULT_BASE_URL",
]

log = logging.getLogger(__name__)

# The doc prints http://api.api.trendspottr.com, then says plain HTTP is refused: same host, https.
DEFAULT_BASE_URL = "https://api.api.trendspottr.com"
API_PATH = "/v1.5/alerts"
LEVEL_FILTERS = ("All", "HighAndExtreme", "ExtremeOnly")
STATES = ("active", "paused")
MAX_OR_CLAUSES = 10
MAX_QUERY_CHARS = 1000  # ours, not the doc's: keeps the URL well under common 8 KiB limits
MAX_RECORDS = 50
MAX_OPAQUE_BYTES = 64  # secret and userid: "up to 64 bytes"
UINT64_LIMIT = 2**64
TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=15.0, pool=5.0)
# `OR` is an operator only as an upper-case, whitespace-delimited word, as in Twitter search
# (which TrendSpottr queries mirror): "or", "ORCL" and "NOR" are search terms, not operators.
_OR = re.compile(r"(?<!\S)OR(?!\S)")


class Webhook(TypedDict):
    url: str
    secret: str


class AlertInfo(TypedDict):
    alert_id: int
    query_string: str
    userid: str | None
    state: str
    level_filter: str
    last_sent_time: int


class RecentAlert(TypedDict):
    sent_time: int
    headline: str
    level: str
    url: str


class VolumePoint(TypedDict):
    timestamp: int
    count: int


class AlertAnalytics(TypedDict):
    sent_time: int
    url: str
    volume: list[VolumePoint]


# -- errors ----------------------------------------------------------------------------------------


class TrendSpottrAPIError(Exception):
    """Base of every failure talking to TrendSpottr. Messages pass through `redact()`."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class TrendSpottrError(TrendSpottrAPIError):
    """The API answered `status: "ERROR"` (e.g. TSAPI_NO_WEBHOOK)."""

    def __init__(self, error_code: str, error_msg: str, method: str = "") -> None:
        self.error_code, self.error_msg, self.method = error_code, redact(error_msg), method
        super().__init__(f"TrendSpottr {method or 'call'} failed: {error_code}: {self.error_msg}")


class TrendSpottrHTTPError(TrendSpottrAPIError):
    """An HTTP status other than 200 (the API itself always answers 200)."""

    def __init__(self, status_code: int, method: str = "") -> None:
        self.status_code, self.method = status_code, method
        super().__init__(f"TrendSpottr {method or 'call'} failed: HTTP {status_code}")


class TrendSpottrProtocolError(TrendSpottrAPIError):
    """HTTP 200, but not the documented JSON object. The body is not quoted: a proxy's error
    page may echo the request URL, and with it the key."""


class TrendSpottrUnavailable(TrendSpottrAPIError):
    """No answer: connection refused/reset, DNS failure, timeout. `error` is the httpx error."""

    def __init__(self, error: httpx.TransportError, method: str = "") -> None:
        self.error, self.method = error, method
        super().__init__(f"TrendSpottr {method or 'call'} unavailable: {type(error).__name__}: {error}")


# -- argument checks (ValueError before any request) -----------------------------------------------


def validate_query(query_string: str) -> None:
    """Raise ValueError unless `query_string` is a non-empty query of at most 10 OR clauses
    and MAX_QUERY_CHARS characters, with no empty clause ("AAPL OR", "OR Apple")."""
    if not isinstance(query_string, str) or not query_string.strip():
        raise ValueError("query_string must be a non-empty string")
    if len(query_string) > MAX_QUERY_CHARS:
        raise ValueError(f"query_string is {len(query_string)} characters; the limit is {MAX_QUERY_CHARS}")
    clauses = [clause.strip() for clause in _OR.split(query_string)]
    if not all(clauses):
        raise ValueError("query_string has an empty OR clause (a leading, trailing or doubled OR)")
    if len(clauses) > MAX_OR_CLAUSES:
        raise ValueError(f"query_string has {len(clauses)} OR clauses; the API allows at most {MAX_OR_CLAUSES}")
    _utf8(query_string, "query_string")


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not representable in UTF-8
        raise ValueError(f"{name} is not valid Unicode text") from None


def _opaque(value: str, name: str) -> str:
    """secret/userid: a non-empty string of at most 64 UTF-8 bytes."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(_utf8(value, name)) > MAX_OPAQUE_BYTES:
        raise ValueError(f"{name} must be at most {MAX_OPAQUE_BYTES} bytes of UTF-8")
    return value


def _id(value: int, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT64_LIMIT:
        raise ValueError(f"{name} must be an unsigned 64-bit integer, got {value!r}")
    return str(value)


def _one_of(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _max_records(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RECORDS:
        raise ValueError(f"max_records must be an integer from 1 to {MAX_RECORDS}, got {value!r}")
    return str(value)


def _webhook_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or not _parse_url(url).host:
        raise ValueError("url must be an absolute http(s) URL")
    return url


def _parse_url(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid URL: {exc}") from None


def _endpoint(base_url: str) -> str:
    """`<base>/v1.5/alerts`, refusing plain HTTP except to a loopback host (the simulator)."""
    url = _parse_url(base_url)
    if url.scheme not in ("https", "http") or not url.host:
        raise ValueError("base_url must be an absolute https:// URL")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ValueError("TrendSpottr refuses plain HTTP: use https:// (http:// only to a loopback host)")
    return str(url).rstrip("/") + API_PATH


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 and ::1
    except ValueError:
        return False


def _guard_httpx_logger() -> None:
    # httpx logs each request URL, key included, at INFO. Settings raise that logger to WARNING,
    # but LOG_LEVEL=DEBUG or a test's caplog can lower it again: mask at the source as well.
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
        logger.addFilter(RedactSecretsFilter())


# -- response checks -----------------------------------------------------------------------------


def _uint(value: Any, name: str, method: str) -> int:
    # bool is an int subclass and floats lose precision past 2**53: only true ints pass.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT64_LIMIT:
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: {name} is not an unsigned 64-bit integer")
    return value


def _str(value: Any, name: str, method: str, *, nullable: bool = False) -> Any:
    if not isinstance(value, str) and not (nullable and value is None):
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: {name} is not a string")
    return value


def _fields(body: Mapping[str, Any], spec: Mapping[str, str], method: str) -> dict[str, Any]:
    """Copy the `spec` fields ("uint", "str" or "str?" for nullable) out of `body`, checked."""
    out: dict[str, Any] = {}
    for name, kind in spec.items():
        value = body.get(name)
        out[name] = (_uint(value, name, method) if kind == "uint"
                     else _str(value, name, method, nullable=kind == "str?"))
    return out


def _list_of_objects(value: Any, name: str, method: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: {name} is not an array of objects")
    return value


_RECENT = {"sent_time": "uint", "headline": "str", "level": "str", "url": "str"}


def _recent(body: Mapping[str, Any], method: str) -> list[RecentAlert]:
    items = _list_of_objects(body.get("recent_alerts"), "recent_alerts", method)
    return [_fields(item, _RECENT, method) for item in items]  # type: ignore[misc]


def _decode(response: httpx.Response, method: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise TrendSpottrHTTPError(response.status_code, method)
    try:
        # Explicit UTF-8 (the doc's encoding), whatever charset a header claims; json keeps
        # integers as Python ints, so 64-bit ids survive intact.
        body = json.loads(response.content.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: the response is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: the response is not a JSON object")
    status = body.get("status")
    if status == "ERROR":
        code, message = body.get("error_code"), body.get("error_msg")
        raise TrendSpottrError(str(code or "TSAPI_UNKNOWN"), str(message or ""), method)
    if status != "OK":
        raise TrendSpottrProtocolError(f"TrendSpottr {method}: unexpected status {str(status)[:20]!r}")
    return body


# -- the client ----------------------------------------------------------------------------------


class TrendSpottrClient:
    """Sync client for the eleven Alerts API methods. Use as a context manager, or close()."""

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, *,
                 transport: httpx.BaseTransport | None = None, timeout: httpx.Timeout = TIMEOUT) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        register_secret(api_key)
        _guard_httpx_logger()
        self._endpoint = _endpoint(base_url)
        self._key = api_key
        # No redirects: following one would hand the key (in the URL) to wherever it points.
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                                  headers={"Accept": "application/json"})

    def __repr__(self) -> str:
        return f"<TrendSpottrClient {self._endpoint}>"  # never the key

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TrendSpottrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- webhook -------------------------------------------------------------------------------

    def set_webhook(self, url: str, secret: str) -> None:
        self._call("POST", "setWebhook", url=_webhook_url(url), secret=_opaque(secret, "secret"))

    def get_webhook(self) -> Webhook:
        """Raises TrendSpottrError("TSAPI_NO_WEBHOOK", ...) when none is configured."""
        body = self._call("GET", "getWebhook")
        return _fields(body, {"url": "str", "secret": "str"}, "getWebhook")  # type: ignore[return-value]

    def delete_webhook(self) -> None:
        self._call("POST", "deleteWebhook")

    # -- alerts --------------------------------------------------------------------------------

    def create_alert(self, query_string: str, level_filter: str = "All", userid: str | None = None) -> int:
        validate_query(query_string)
        params = {"query_string": query_string,
                  "level_filter": _one_of(level_filter, LEVEL_FILTERS, "level_filter")}
        if userid is not None:  # omitted = no multiplexing, per the doc
            params["userid"] = _opaque(userid, "userid")
        return _uint(self._call("POST", "createAlert", **params).get("alert_id"), "alert_id", "createAlert")

    def delete_alert(self, alert_id: int) -> None:
        self._call("POST", "deleteAlert", alert_id=_id(alert_id, "alert_id"))

    def set_alert_state(self, alert_id: int, state: str) -> None:
        self._call("POST", "setAlertState", alert_id=_id(alert_id, "alert_id"),
                   state=_one_of(state, STATES, "state"))

    def set_alert_level(self, alert_id: int, level_filter: str) -> None:
        self._call("POST", "setAlertLevel", alert_id=_id(alert_id, "alert_id"),
                   level_filter=_one_of(level_filter, LEVEL_FILTERS, "level_filter"))

    def get_alert_info(self, alert_id: int) -> AlertInfo:
        body = self._call("GET", "getAlertInfo", alert_id=_id(alert_id, "alert_id"))
        spec = {"alert_id": "uint", "query_string": "str", "userid": "str?", "state": "str",
                "level_filter": "str", "last_sent_time": "uint"}
        return _fields(body, spec, "getAlertInfo")  # type: ignore[return-value]

    def get_recent_alerts_for_query(self, query_string: str, max_records: int = 5) -> list[RecentAlert]:
        validate_query(query_string)
        # Passed raw: httpx percent-encodes it exactly once ("should NOT be urlencoded" by us).
        body = self._call("GET", "getRecentAlertsForQuery", query_string=query_string,
                          max_records=_max_records(max_records))
        return _recent(body, "getRecentAlertsForQuery")

    def get_recent_alerts(self, alert_id: int, max_records: int = 10) -> list[RecentAlert]:
        body = self._call("GET", "getRecentAlerts", alert_id=_id(alert_id, "alert_id"),
                          max_records=_max_records(max_records))
        return _recent(body, "getRecentAlerts")

    def get_alert_analytics(self, notification_id: int) -> AlertAnalytics:
        method = "getAlertAnalytics"
        body = self._call("GET", method, notification_id=_id(notification_id, "notification_id"))
        points = _list_of_objects(body.get("volume"), "volume", method)
        volume = [_fields(p, {"timestamp": "uint", "count": "uint"}, method) for p in points]
        result = _fields(body, {"sent_time": "uint", "url": "str"}, method)
        return {**result, "volume": volume}  # type: ignore[typeddict-item]

    # -- transport -----------------------------------------------------------------------------

    def _call(self, http_method: str, method: str, **params: str) -> dict[str, Any]:
        query = {"method": method, "key": self._key, **params}
        try:
            response = self._http.request(http_method, self._endpoint, params=query)
        except httpx.TransportError as exc:
            log.warning("TrendSpottr %s unavailable: %s", method, redact(f"{type(exc).__name__}: {exc}"))
            raise TrendSpottrUnavailable(exc, method) from exc
        log.debug("TrendSpottr %s -> HTTP %s", method, response.status_code)
        return _decode(response, method)
