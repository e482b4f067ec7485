"""A TrendSpottr Alerts API v1.5 simulator (../shared/providers/trendspottr-alerts-api.md).

Serves `/v1.5/alerts?method=<name>&key=...` (all eleven methods, GET or POST, URL parameters;
form-encoded POST bodies are merged in too) over minimal HTTP/1.1, one request per connection,
always HTTP 200 with `status` OK/ERROR. State is kept per API key: webhook, alerts, delivered
notifications. Alert events are POSTed to the webhook in the documented JSON shape and retried
4 more times on any non-200 answer. Knobs work from Python or over HTTP (`/control/...`).
Content comes from the pure `trendgen`. No Django here.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Callable, Coroutine, Iterable
from urllib.parse import parse_qs, urlsplit

import httpx

from . import trendgen

API_PATH = "/v1.5/alerts"
MAX_ATTEMPTS = 5  # the first post plus the documented "4 more times"
MAX_OR_CLAUSES = 10
MAX_RECORDS = 50
MAX_OPAQUE_BYTES = 64  # secret and userid: "up to 64 bytes"
MAX_BODY = 64 * 1024
STATES = ("active", "paused")
# Ids start past 2**53 on purpose: a client that routes them through a float (JavaScript, or
# float() in Python) loses the low bits. Still far below 2**63, so signed BIGINT columns hold them.
ALERT_ID_BASE = 2**53 + 1013
EVENT_ID_BASE = 2**54 + 38
NOTIFICATION_ID_BASE = 2**55 + 60479


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


@dataclass
class Event:
    api_key: str
    url: str  # the webhook URL when the event was created: later changes don't redirect it
    body: dict[str, Any]  # exactly what is posted; attempts/post_time change per attempt
    status: str = "pending"  # provider side: pending | succeeded | failed (posted: always pending)


class TrendSpottrSimulator:
    """Knobs: deliver_now(), resend(), post_raw(), tick(), fail_api_with (HTTP status for every
    API call). Observability: calls, events, deliveries, accounts, wait_for()."""

    def __init__(
        self, api_keys: Iterable[str] = ("demo-api-key",), *, host: str = "127.0.0.1", port: int = 0,
        interval: float | None = 30.0, retry_interval: float = 900.0, post_timeout: float = 15.0,
        control_token: str | None = None, seed: int | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_keys = set(api_keys)
        self.host, self._requested_port = host, port
        self.interval, self.retry_interval, self.post_timeout = interval, retry_interval, post_timeout
        self.control_token = control_token
        self.fail_api_with: int | None = None
        self.accounts: dict[str, Account] = {}
        self.events: dict[int, Event] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []  # API calls seen (key removed)
        self._sent: list[dict[str, Any]] = []  # every delivered notification, for query lookups
        self._clock, self._rng = clock, random.Random(seed)
        self._alert_ids = itertools.count(ALERT_ID_BASE, 7)
        self._event_ids = itertools.count(EVENT_ID_BASE, 3)
        self._notification_ids = itertools.count(NOTIFICATION_ID_BASE, 5)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None
        self._methods: dict[str, Callable[[Account, dict[str, str]], dict[str, Any]]] = {
            "setWebhook": self._set_webhook, "getWebhook": self._get_webhook,
            "deleteWebhook": self._delete_webhook, "createAlert": self._create_alert,
            "deleteAlert": self._delete_alert, "setAlertState": self._set_alert_state,
            "setAlertLevel": self._set_alert_level, "getAlertInfo": self._get_alert_info,
            "getRecentAlertsForQuery": self._recent_for_query, "getRecentAlerts": self._recent_alerts,
            "getAlertAnalytics": self._alert_analytics,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.post_timeout, follow_redirects=False)
        self._server = await asyncio.start_server(self._serve_connection, self.host, self._requested_port)
        if self.interval:
            self._spawn(self._tick_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
        if self._http:
            await self._http.aclose()

    async def __aenter__(self) -> TrendSpottrSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the simulator first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # -- knobs -------------------------------------------------------------------------------

    async def deliver_now(self, alert_id: int, *, level: str | None = None) -> dict[str, Any]:
        """Generate one event for `alert_id`, post it now and return it as posted; retries, if
        the first post fails, continue in the background."""
        key, account, alert = self._find_alert(alert_id)
        if account.webhook is None:
            raise LookupError("no webhook configured for this alert's account")
        if alert.state != "active":
            raise ValueError(f"alert {alert_id} is paused: it delivers nothing")
        if level is not None and level not in trendgen.ALLOWED_LEVELS[alert.level_filter]:
            raise ValueError(f"level {level!r} is below the alert's filter {alert.level_filter!r}")
        event = self._new_event(key, account, alert, level)
        posted = copy.deepcopy(event.body)
        if await self._attempt(event, 0) != 200:
            self._spawn(self._retry(event, first=1))
        return posted

    async def resend(self, event_id: int) -> int | None:
        """Post the same event again (a duplicate, as retries produce): attempts + 1, new post_time.
        Returns the receiver's status code, None on a connection error."""
        event = self.events.get(event_id)
        if event is None:
            raise LookupError(f"unknown event {event_id}")
        return await self._attempt(event, event.body["attempts"] + 1)

    async def post_raw(self, body: bytes, content_type: str = "application/json", *,
                       api_key: str | None = None) -> int:
        """POST arbitrary bytes to `api_key`'s (default: the only/first key's) webhook URL."""
        account = self.accounts.get(api_key or sorted(self.api_keys)[0])
        if account is None or account.webhook is None:
            raise LookupError("no webhook configured")
        assert self._http is not None, "start() the simulator first"
        response = await self._http.post(account.webhook[0], content=body,
                                         headers={"Content-Type": content_type})
        return response.status_code

    def tick(self) -> list[dict[str, Any]]:
        """One automatic round: an event for every active alert of every account with a webhook."""
        posted = []
        for key, account in self.accounts.items():
            for alert in list(account.alerts.values()):
                if account.webhook and alert.state == "active":
                    event = self._new_event(key, account, alert, None)
                    posted.append(copy.deepcopy(event.body))
                    self._spawn(self._retry(event, first=0))
        return posted

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` is true: woken by state changes, re-checked every 10 ms."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.01)
                except TimeoutError:
                    pass

    def stats(self) -> dict[str, Any]:
        statuses = [e.status for e in self.events.values()]
        return {"apiCalls": len(self.calls), "accounts": len(self.accounts),
                "alerts": sum(len(a.alerts) for a in self.accounts.values()), "events": len(self.events),
                "deliveries": len(self.deliveries), "succeeded": statuses.count("succeeded"),
                "failed": statuses.count("failed"), "failApiWith": self.fail_api_with}

    # -- webhook delivery --------------------------------------------------------------------

    def _new_event(self, key: str, account: Account, alert: Alert, level: str | None) -> Event:
        assert account.webhook is not None
        now = int(self._clock())
        level = level or trendgen.pick_level(self._rng, alert.level_filter)
        event_id, notification_id = next(self._event_ids), next(self._notification_ids)
        content = trendgen.generate_alert(self._rng, alert.query_string,
                                          now=datetime.fromtimestamp(now, timezone.utc), seq=len(self.events))
        body = {"event_id": event_id, "secret": account.webhook[1], "type": "alert", "status": "pending",
                "attempts": 0, "created": now, "post_time": now,
                "data": {"type": "alert", "alert_id": alert.alert_id, "query_string": alert.query_string,
                         "userid": alert.userid, "notification_id": notification_id, "level": level, **content}}
        event = self.events[event_id] = Event(key, account.webhook[0], body)
        return event

    async def _retry(self, event: Event, first: int) -> None:
        for attempt in range(first, MAX_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.retry_interval)  # "at roughly 15 minute intervals"
            if event.status == "succeeded" or await self._attempt(event, attempt) == 200:
                return
        event.status = "failed"
        self._changed.set()

    async def _attempt(self, event: Event, attempt: int) -> int | None:
        # The first post happens as the event is created (the doc's sample: post_time == created).
        now = event.body["created"] if attempt == 0 else int(self._clock())
        event.body.update(attempts=attempt, post_time=now)
        account = self.accounts[event.api_key]
        alert = account.alerts.get(event.body["data"]["alert_id"])
        if alert:
            alert.last_sent_time = now  # "the last Unix time an alert was sent or posted"
        status, error = await self._post(event.url, _php_json(event.body))
        self.deliveries.append({"event_id": event.body["event_id"], "attempt": attempt,
                                "status": status, "error": error, "post_time": now})
        if status == 200 and event.status != "succeeded":
            event.status = "succeeded"
            self._record_notification(account, event.body, now)
        self._changed.set()
        return status

    async def _post(self, url: str, content: bytes) -> tuple[int | None, str | None]:
        assert self._http is not None, "start() the simulator first"
        try:
            response = await self._http.post(url, content=content, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None

    def _record_notification(self, account: Account, body: dict[str, Any], sent_time: int) -> None:
        data = body["data"]
        record = {"notification_id": data["notification_id"], "alert_id": data["alert_id"],
                  "query_key": trendgen.query_key(data["query_string"]), "sent_time": sent_time,
                  "headline": data["headline"], "level": data["level"], "url": data["url"]}
        account.notifications[record["notification_id"]] = record
        self._sent.append(record)

    async def _tick_loop(self) -> None:
        while self.interval:  # can be set to None at runtime to stop automatic alerts
            await asyncio.sleep(self.interval)
            self.tick()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _find_alert(self, alert_id: int) -> tuple[str, Account, Alert]:
        for key, account in self.accounts.items():
            if alert_id in account.alerts:
                return key, account, account.alerts[alert_id]
        raise LookupError(f"unknown alert {alert_id}")

    # -- the API -----------------------------------------------------------------------------

    def _api(self, params: dict[str, str]) -> dict[str, Any]:
        key = params.get("key", "")
        if key not in self.api_keys:
            raise ApiError("TSAPI_BAD_KEY", "A valid API key is required")
        method = params.get("method", "")
        if method not in self._methods:
            raise ApiError("TSAPI_BAD_METHOD", f"Unknown method: {method!r}")
        return {"status": "OK", **self._methods[method](self.accounts.setdefault(key, Account()), params)}

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

    # -- HTTP --------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), 10)
            except (ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                request = None
                await _respond(writer, 400, b"Bad Request\n", "text/plain")
            if request is not None:
                try:
                    answer = await self._route(*request)
                except Exception as exc:  # a simulator bug: answer 500 rather than hang the client
                    answer = 500, f"{type(exc).__name__}: {exc}\n".encode(), "text/plain"
                await _respond(writer, *answer)
        except ConnectionError:
            pass  # the client went away: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _route(self, method: str, target: str, headers: dict[str, str],
                     body: bytes) -> tuple[int, bytes, str]:
        url = urlsplit(target)
        if url.path.startswith("/control/"):
            return await self._control(url.path.removeprefix("/control/"), _parse_qs(url.query))
        if url.path != API_PATH:
            return 404, b"Not Found\n", "text/plain"
        if method not in ("GET", "POST"):
            return 405, b"Method Not Allowed\n", "text/plain"
        if self.fail_api_with is not None:
            self.calls.append({"http_method": method, "method": None, "params": {}})
            return self.fail_api_with, b"Simulated failure\n", "text/plain"
        try:
            params = _parse_qs(url.query)
            if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                params.update(_parse_qs(body.decode("ascii")))
            self.calls.append({"http_method": method, "method": params.get("method"),
                               "params": {k: v for k, v in params.items() if k not in ("key", "method")}})
            payload = self._api(params)
        except (UnicodeDecodeError, ValueError) as exc:
            payload = _error(ApiError("TSAPI_BAD_PARAMETER", f"Parameters must be UTF-8 ({type(exc).__name__})"))
        except ApiError as exc:
            payload = _error(exc)
        self._changed.set()
        # ensure_ascii=False: the doc promises UTF-8 strings, so clients must decode it as such.
        return 200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8"

    async def _control(self, action: str, query: dict[str, str]) -> tuple[int, bytes, str]:
        if self.control_token is None or query.pop("token", None) != self.control_token:
            return _control_json(403, {"error": "Forbidden"})
        try:
            if action == "deliver":
                event = await self.deliver_now(int(query["alert_id"]), level=query.get("level"))
                return _control_json(200, event)
            if action == "resend":
                return _control_json(200, {"status_code": await self.resend(int(query["event_id"]))})
            if action == "tick":
                return _control_json(200, {"events": self.tick()})
            if action == "fail_api":
                self.fail_api_with = int(query["status"]) if query.get("status") else None
            elif action != "stats":
                return _control_json(404, {"error": f"Unknown action {action!r}"})
        except (KeyError, ValueError) as exc:  # KeyError: a missing parameter or an unknown event
            return _control_json(400, {"error": f"Bad request: {exc}"})
        except LookupError as exc:
            return _control_json(404, {"error": str(exc)})
        return _control_json(200, self.stats())


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


def _error(exc: ApiError) -> dict[str, Any]:
    return {"status": "ERROR", "error_code": exc.code, "error_msg": exc.msg}


def _php_json(body: dict[str, Any]) -> bytes:
    # Like PHP's json_encode, which produced the doc's sample: "\/" and \uXXXX escapes. Valid JSON
    # either way, and a receiver that regex-matches the raw text instead of parsing it breaks here.
    return json.dumps(body).replace("/", "\\/").encode("ascii")


def _parse_qs(query: str) -> dict[str, str]:
    # errors="strict": the doc requires UTF-8; a bad byte is a parameter error, not mojibake.
    parsed = parse_qs(query, keep_blank_values=True, encoding="utf-8", errors="strict")
    return {k: v[-1] for k, v in parsed.items()}


def _control_json(status: int, payload: dict[str, Any]) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None  # connected and left
    method, target, _version = line.decode("latin-1").split()
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    if not 0 <= length <= MAX_BODY:
        raise ValueError("body too large")
    return method, target, headers, await reader.readexactly(length) if length else b""


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


def build_from_options(options: dict[str, Any]) -> TrendSpottrSimulator:
    """Build from `manage.py simulate trendspottr` options (see that command)."""
    interval = options.get("news_interval")
    return TrendSpottrSimulator(
        options.get("token") or ["demo-api-key"],
        host=options.get("host", "127.0.0.1"),
        port=options.get("port", 0),
        interval=interval if interval and interval > 0 else 30.0,  # webhook events always flow
        control_token=options.get("control_token"),
        seed=options.get("seed"),
    )
