"""A TrendSpottr Alerts API v1.5 simulator (../shared/providers/trendspottr-alerts-api.md).

Serves `/v1.5/alerts?method=<name>&key=...` (all eleven methods, GET or POST, URL parameters;
form-encoded POST bodies are merged in too) over minimal HTTP/1.1, one request per connection,
always HTTP 200 with `status` OK/ERROR. State is kept per API key: webhook, alerts, delivered
notifications. Alert events are POSTed to the webhook in the documented JSON shape and retried
4 more times on any non-200 answer. Knobs work from Python or over HTTP (`/control/...`).
The methods themselves live in `trendapi`, content comes from the pure `trendgen`. No Django here.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import httpx

from . import trendgen
from .base import optional_int, query_params
from .http import HttpSimulator, Request, respond
from .trendapi import MAX_OPAQUE_BYTES, MAX_OR_CLAUSES, MAX_RECORDS, STATES  # noqa: F401 (re-exported)
from .trendapi import Account, Alert, AlertsApi, ApiError, error_payload

API_PATH = "/v1.5/alerts"
MAX_ATTEMPTS = 5  # the first post plus the documented "4 more times"
MAX_BODY = 64 * 1024
# Ids start past 2**53 on purpose: a client that routes them through a float (JavaScript, or
# float() in Python) loses the low bits. Still far below 2**63, so signed BIGINT columns hold them.
ALERT_ID_BASE = 2**53 + 1013
EVENT_ID_BASE = 2**54 + 38
NOTIFICATION_ID_BASE = 2**55 + 60479


@dataclass
class Event:
    api_key: str
    url: str  # the webhook URL when the event was created: later changes don't redirect it
    body: dict[str, Any]  # exactly what is posted; attempts/post_time change per attempt
    status: str = "pending"  # provider side: pending | succeeded | failed (posted: always pending)


class TrendSpottrSimulator(HttpSimulator, AlertsApi):
    """Knobs: deliver_now(), resend(), post_raw(), tick(), fail_api_with (HTTP status for every
    API call). Observability: calls, events, deliveries, accounts, wait_for()."""

    max_body = MAX_BODY  # form-encoded POST bodies carry parameters too
    control_not_found = (LookupError,)  # an unknown alert or event; KeyError (a missing parameter) is a 400

    def __init__(
        self, api_keys: Iterable[str] = ("demo-api-key",), *, host: str = "127.0.0.1", port: int = 0,
        interval: float | None = 30.0, retry_interval: float = 900.0, post_timeout: float = 15.0,
        control_token: str | None = None, seed: int | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host=host, control_token=control_token)
        self.api_keys = set(api_keys)
        self._requested_port = port
        self.interval, self.retry_interval, self.post_timeout = interval, retry_interval, post_timeout
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
        self._http: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.post_timeout, follow_redirects=False)
        await self._listen(self._requested_port)
        if self.interval:
            self._spawn(self._tick_loop())

    async def stop(self) -> None:
        await self._shutdown()  # ends retries and requests still being served too
        if self._http:
            await self._http.aclose()

    @property
    def base_url(self) -> str:
        return f"http://{self._public_host}:{self.port}"

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
        self._notify()

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
        self._notify()
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

    def _find_alert(self, alert_id: int) -> tuple[str, Account, Alert]:
        for key, account in self.accounts.items():
            if alert_id in account.alerts:
                return key, account, account.alerts[alert_id]
        raise LookupError(f"unknown alert {alert_id}")

    # -- HTTP --------------------------------------------------------------------------------

    async def _route(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = self._answer(request)
        except Exception as exc:  # a simulator bug: answer 500 rather than hang the client
            answer = 500, f"{type(exc).__name__}: {exc}\n"
        await respond(writer, *answer)

    def _answer(self, request: Request) -> tuple[int, str] | tuple[int, bytes, str]:
        url, method = request.url, request.method
        if url.path != API_PATH:
            return 404, "Not Found\n"
        if method not in ("GET", "POST"):
            return 405, "Method Not Allowed\n"
        if self.fail_api_with is not None:
            self.calls.append({"http_method": method, "method": None, "params": {}})
            return self.fail_api_with, "Simulated failure\n"
        try:
            # strict: the doc requires UTF-8; a bad byte is a parameter error, not mojibake.
            params = query_params(url.query, keep_blank=True, strict=True)
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                params.update(query_params(request.body.decode("ascii"), keep_blank=True, strict=True))
            self.calls.append({"http_method": method, "method": params.get("method"),
                               "params": {k: v for k, v in params.items() if k not in ("key", "method")}})
            payload = self._api(params)
        except (UnicodeDecodeError, ValueError) as exc:
            error = ApiError("TSAPI_BAD_PARAMETER", f"Parameters must be UTF-8 ({type(exc).__name__})")
            payload = error_payload(error)
        except ApiError as exc:
            payload = error_payload(exc)
        self._notify()
        # ensure_ascii=False: the doc promises UTF-8 strings, so clients must decode it as such.
        return 200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8"

    # -- /control/<action>: see SimulatorBase ------------------------------------------------

    async def _control_deliver(self, query: dict[str, str]) -> dict[str, Any]:
        return await self.deliver_now(int(query["alert_id"]), level=query.get("level"))

    async def _control_resend(self, query: dict[str, str]) -> dict[str, Any]:
        return {"status_code": await self.resend(int(query["event_id"]))}

    def _control_tick(self, query: dict[str, str]) -> dict[str, Any]:
        return {"events": self.tick()}

    def _control_fail_api(self, query: dict[str, str]) -> None:
        self.fail_api_with = optional_int(query, "status")

    def _stats(self) -> dict[str, Any]:
        return self.stats()


def _php_json(body: dict[str, Any]) -> bytes:
    # Like PHP's json_encode, which produced the doc's sample: "\/" and \uXXXX escapes. Valid JSON
    # either way, and a receiver that regex-matches the raw text instead of parsing it breaks here.
    return json.dumps(body).replace("/", "\\/").encode("ascii")


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
