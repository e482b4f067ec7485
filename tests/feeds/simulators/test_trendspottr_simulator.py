"""The TrendSpottr Alerts API simulator, driven over real loopback sockets with raw httpx calls.

The API is exercised on the wire (not through our client) so these tests pin the simulator to
the provider doc. Webhook deliveries go to a small asyncio receiver that records every POST.
No sleeps for synchronisation: every wait is on a condition bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterable
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from feeds.simulators import trendgen
from feeds.simulators.trendspottr import TrendSpottrSimulator, build_from_options

KEY, KEY2 = "key-one-1234", "key-two-5678"
CONTROL = "ctl-secret"
SECRET = "topsecret!!"
TIMEOUT = 5.0
EVENT_FIELDS = ["event_id", "secret", "type", "status", "attempts", "created", "post_time", "data"]
DATA_FIELDS = {"type", "alert_id", "query_string", "userid", "notification_id", "level", "url", "headline",
               "description", "related_hashtags"}
THUMBNAIL_FIELDS = {"thumbnail_url", "thumbnail_width", "thumbnail_height"}


class TickingClock:
    """Wall-clock stand-in: every reading is one second later, so post_time visibly moves
    between retries even though the test's retry interval is milliseconds."""

    def __init__(self) -> None:
        self.now = 1_700_000_000

    def __call__(self) -> float:
        self.now += 1
        return self.now


class Receiver:
    """A loopback webhook endpoint: records each request, answers from `statuses` (then 200)."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[str, dict[str, str], bytes]] = []  # (request line, headers, body)
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks/trendspottr"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.posts]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else 200
            self.posts.append((request_line, headers, body))  # recorded before the answer goes out
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest_asyncio.fixture
async def sim(clock: TickingClock) -> AsyncIterator[TrendSpottrSimulator]:
    async with TrendSpottrSimulator([KEY, KEY2], interval=None, retry_interval=0.02,
                                    control_token=CONTROL, seed=7, clock=clock) as simulator:
        yield simulator


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


async def api(sim: TrendSpottrSimulator, method: str | None, key: str | None = KEY, *, http: str = "GET",
              **params: Any) -> dict[str, Any]:
    """One raw API call; asserts the documented transport contract (HTTP 200, a JSON object)."""
    query = {k: str(v) for k, v in params.items()}
    if method is not None:
        query["method"] = method
    if key is not None:
        query["key"] = key
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        response = await http_client.request(http, f"{sim.base_url}/v1.5/alerts", params=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = json.loads(response.content.decode("utf-8"))
    assert isinstance(body, dict) and body["status"] in ("OK", "ERROR")
    return body


async def expect_error(code: str, sim: TrendSpottrSimulator, method: str | None, key: str | None = KEY,
                       **params: Any) -> None:
    body = await api(sim, method, key, **params)
    assert body["status"] == "ERROR" and body["error_code"] == code, body
    assert isinstance(body["error_msg"], str) and body["error_msg"]


async def setup_alert(sim: TrendSpottrSimulator, receiver: Receiver, query: str = "AAPL OR Apple",
                      key: str = KEY, **params: Any) -> int:
    assert (await api(sim, "setWebhook", key, http="POST", url=receiver.url, secret=SECRET))["status"] == "OK"
    body = await api(sim, "createAlert", key, http="POST", query_string=query, **params)
    assert body["status"] == "OK", body
    return body["alert_id"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- API: state and documented errors -------------------------------------------------------------


@pytest.mark.asyncio
async def test_webhook_is_kept_per_api_key(sim: TrendSpottrSimulator) -> None:
    await expect_error("TSAPI_NO_WEBHOOK", sim, "getWebhook")
    answer = await api(sim, "setWebhook", http="POST", url="https://example.com/hook", secret=SECRET)
    assert answer == {"status": "OK"}
    assert await api(sim, "getWebhook") == {"status": "OK", "secret": SECRET, "url": "https://example.com/hook"}
    await expect_error("TSAPI_NO_WEBHOOK", sim, "getWebhook", KEY2)
    assert (await api(sim, "setWebhook", http="POST", url="https://example.com/v2", secret="s2"))["status"] == "OK"
    assert (await api(sim, "getWebhook"))["url"] == "https://example.com/v2"  # replaced
    assert await api(sim, "deleteWebhook", http="POST") == {"status": "OK"}
    await expect_error("TSAPI_NO_WEBHOOK", sim, "getWebhook")
    assert (await api(sim, "deleteWebhook"))["status"] == "OK"  # idempotent


@pytest.mark.asyncio
async def test_missing_or_unknown_key_and_method(sim: TrendSpottrSimulator) -> None:
    await expect_error("TSAPI_BAD_KEY", sim, "getWebhook", None)
    await expect_error("TSAPI_BAD_KEY", sim, "getWebhook", "")
    await expect_error("TSAPI_BAD_KEY", sim, "getWebhook", "not-a-key")
    await expect_error("TSAPI_BAD_METHOD", sim, "getAlerts")
    await expect_error("TSAPI_BAD_METHOD", sim, None)
    assert not sim.accounts.get("not-a-key")


@pytest.mark.asyncio
async def test_create_alert_needs_a_webhook(sim: TrendSpottrSimulator) -> None:
    await expect_error("TSAPI_NO_WEBHOOK", sim, "createAlert", query_string="AAPL")


@pytest.mark.asyncio
async def test_alert_lifecycle(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver, userid="user7")
    assert isinstance(alert_id, int) and 2**53 < alert_id < 2**63  # past float precision
    assert await api(sim, "getAlertInfo", alert_id=alert_id) == {
        "status": "OK", "alert_id": alert_id, "query_string": "AAPL OR Apple", "userid": "user7",
        "state": "active", "level_filter": "All", "last_sent_time": 0}
    assert (await api(sim, "setAlertState", http="POST", alert_id=alert_id, state="paused"))["status"] == "OK"
    level = await api(sim, "setAlertLevel", http="POST", alert_id=alert_id, level_filter="ExtremeOnly")
    assert level["status"] == "OK"
    info = await api(sim, "getAlertInfo", alert_id=alert_id)
    assert (info["state"], info["level_filter"]) == ("paused", "ExtremeOnly")
    other = (await api(sim, "createAlert", query_string="TSLA", level_filter="HighAndExtreme"))["alert_id"]
    assert other != alert_id
    assert (await api(sim, "getAlertInfo", alert_id=other))["userid"] == ""  # omitted: no multiplexing
    assert (await api(sim, "deleteAlert", http="POST", alert_id=alert_id))["status"] == "OK"
    await expect_error("TSAPI_UNKNOWN_ALERT", sim, "getAlertInfo", alert_id=alert_id)
    await expect_error("TSAPI_UNKNOWN_ALERT", sim, "deleteAlert", alert_id=alert_id)
    await expect_error("TSAPI_UNKNOWN_ALERT", sim, "setAlertState", alert_id=2**64 - 1, state="active")
    assert (await api(sim, "getAlertInfo", alert_id=other))["status"] == "OK"


@pytest.mark.asyncio
async def test_alerts_belong_to_their_account(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver)
    for method, extra in [("getAlertInfo", {}), ("deleteAlert", {}), ("getRecentAlerts", {}),
                          ("setAlertState", {"state": "paused"}), ("setAlertLevel", {"level_filter": "All"})]:
        await expect_error("TSAPI_UNKNOWN_ALERT", sim, method, KEY2, alert_id=alert_id, **extra)
    assert (await api(sim, "getAlertInfo", alert_id=alert_id))["state"] == "active"


@pytest.mark.asyncio
async def test_duplicate_userid_and_query(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    await setup_alert(sim, receiver, userid="user7")
    await expect_error("TSAPI_DUPLICATE_ALERT", sim, "createAlert", query_string="AAPL OR Apple", userid="user7")
    assert (await api(sim, "createAlert", query_string="AAPL OR Apple", userid="user8"))["status"] == "OK"
    assert (await api(sim, "createAlert", query_string="AAPL", userid="user7"))["status"] == "OK"
    await setup_alert(sim, receiver, key=KEY2, userid="user7")  # another account: no clash


@pytest.mark.asyncio
async def test_bad_parameters(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver)
    bad = "TSAPI_BAD_PARAMETER"
    await expect_error(bad, sim, "createAlert", query_string="MSFT", level_filter="Everything")
    await expect_error(bad, sim, "createAlert", query_string="MSFT", userid="u" * 65)
    await expect_error(bad, sim, "setAlertState", alert_id=alert_id, state="enabled")
    await expect_error(bad, sim, "setAlertState", alert_id=alert_id)
    await expect_error(bad, sim, "setAlertLevel", alert_id=alert_id, level_filter="all")
    for alert in ("abc", "-1", "1.0", str(2**64), "", "٣"):
        await expect_error(bad, sim, "getAlertInfo", alert_id=alert)
    await expect_error(bad, sim, "getAlertInfo")
    for records in ("0", "51", "x"):
        await expect_error(bad, sim, "getRecentAlerts", alert_id=alert_id, max_records=records)
    await expect_error(bad, sim, "getAlertAnalytics", notification_id="nope")
    await expect_error(bad, sim, "setWebhook", url="ftp://example.com/x", secret=SECRET)
    await expect_error(bad, sim, "setWebhook", url="https://example.com/x", secret="é" * 33)  # 66 bytes
    await expect_error(bad, sim, "setWebhook", url="https://example.com/x")
    await expect_error(bad, sim, "createAlert", query_string="")
    assert (await api(sim, "setWebhook", url="https://example.com/x", secret="é" * 32))["status"] == "OK"


@pytest.mark.asyncio
async def test_query_clause_limit(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    await setup_alert(sim, receiver, query="MSFT")
    ten = " OR ".join(f"T{i}" for i in range(10))
    assert (await api(sim, "createAlert", query_string=ten))["status"] == "OK"
    for method in ("createAlert", "getRecentAlertsForQuery"):
        await expect_error("TSAPI_BAD_QUERY", sim, method, query_string=ten + " OR T10")
        await expect_error("TSAPI_BAD_QUERY", sim, method, query_string="AAPL OR ")
        await expect_error("TSAPI_BAD_QUERY", sim, method, query_string="   ")
    # Only an upper-case, whitespace-delimited OR is an operator.
    lower = " or ".join(f"T{i}" for i in range(12))
    assert (await api(sim, "createAlert", query_string=lower))["status"] == "OK"
    assert (await api(sim, "createAlert", query_string="ORCL OR NOR"))["status"] == "OK"


@pytest.mark.asyncio
async def test_utf8_in_and_out(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver, query="Nestlé OR 日本株", userid="ユーザー")
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        response = await http_client.get(f"{sim.base_url}/v1.5/alerts", params={
            "method": "getAlertInfo", "key": KEY, "alert_id": alert_id})
        assert "Nestlé OR 日本株".encode() in response.content  # raw UTF-8, not \u escapes
        assert response.json()["userid"] == "ユーザー"
        raw = await http_client.get(f"{sim.base_url}/v1.5/alerts?method=createAlert&key={KEY}&query_string=%FF%FE")
    assert raw.json()["error_code"] == "TSAPI_BAD_PARAMETER"


@pytest.mark.asyncio
async def test_get_and_post_both_work(sim: TrendSpottrSimulator) -> None:
    assert (await api(sim, "setWebhook", http="GET", url="https://e.com/h", secret=SECRET))["status"] == "OK"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        response = await http_client.post(f"{sim.base_url}/v1.5/alerts", data={
            "method": "createAlert", "key": KEY, "query_string": "AMD"})  # form body, as PHP accepts
    assert response.json()["status"] == "OK"
    assert [c["http_method"] for c in sim.calls] == ["GET", "POST"]
    assert all("key" not in c["params"] for c in sim.calls)


@pytest.mark.asyncio
async def test_http_edge_cases(sim: TrendSpottrSimulator) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        assert (await http_client.get(f"{sim.base_url}/v1.4/alerts")).status_code == 404
        assert (await http_client.put(f"{sim.base_url}/v1.5/alerts")).status_code == 405
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"garbage\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 400 ")
    writer.close()


@pytest.mark.asyncio
async def test_fail_api_with(sim: TrendSpottrSimulator) -> None:
    sim.fail_api_with = 503
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        url = f"{sim.base_url}/v1.5/alerts?method=getWebhook&key={KEY}"
        assert (await http_client.get(url)).status_code == 503
        sim.fail_api_with = None
        assert (await http_client.get(url)).json()["error_code"] == "TSAPI_NO_WEBHOOK"


# -- webhook delivery -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delivered_event_has_the_documented_shape(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver, userid="user7")
    event = await sim.deliver_now(alert_id)
    assert len(receiver.posts) == 1  # deliver_now returns after the first attempt
    request_line, headers, raw = receiver.posts[0]
    assert request_line == f"POST {urlsplit(receiver.url).path} HTTP/1.1"
    assert headers["content-type"] == "application/json"
    assert b"https:\\/\\/" in raw  # PHP-style escaped slashes, as in the doc's sample
    posted = json.loads(raw)
    assert posted == event and list(posted) == EVENT_FIELDS
    assert (posted["secret"], posted["type"], posted["status"], posted["attempts"]) == (SECRET, "alert", "pending", 0)
    assert posted["created"] == posted["post_time"] and isinstance(posted["created"], int)
    assert isinstance(posted["event_id"], int) and posted["event_id"] > 2**53
    data = posted["data"]
    assert DATA_FIELDS <= set(data) <= DATA_FIELDS | THUMBNAIL_FIELDS
    assert set(data) & THUMBNAIL_FIELDS in (set(), THUMBNAIL_FIELDS)  # all three or none
    assert (data["type"], data["alert_id"], data["query_string"], data["userid"]) == (
        "alert", alert_id, "AAPL OR Apple", "user7")
    assert isinstance(data["notification_id"], int) and data["notification_id"] > 2**53
    assert data["level"] in ("Elevated", "High", "Extreme")
    assert "Apple" in data["headline"] or "AAPL" in data["headline"]
    assert 250 <= len(data["description"]) <= 512
    assert urlsplit(data["url"]).scheme == "https" and urlsplit(data["url"]).netloc
    assert 1 <= len(data["related_hashtags"]) <= 5 and all(t.startswith("#") for t in data["related_hashtags"])
    assert sim.events[posted["event_id"]].status == "succeeded"
    assert sim.deliveries == [{"event_id": posted["event_id"], "attempt": 0, "status": 200, "error": None,
                               "post_time": posted["post_time"]}]
    assert (await api(sim, "getAlertInfo", alert_id=alert_id))["last_sent_time"] == posted["post_time"]


@pytest.mark.asyncio
async def test_non_200_is_retried_with_attempts_and_post_time(sim: TrendSpottrSimulator) -> None:
    async with Receiver(statuses=[500, 500]) as flaky:
        alert_id = await setup_alert(sim, flaky)
        event = await sim.deliver_now(alert_id)
        await sim.wait_for(lambda: sim.events[event["event_id"]].status == "succeeded", TIMEOUT)
    posted = flaky.events()
    assert [p["attempts"] for p in posted] == [0, 1, 2]
    assert {p["event_id"] for p in posted} == {event["event_id"]}
    assert {p["created"] for p in posted} == {event["created"]}
    times = [p["post_time"] for p in posted]
    assert times == sorted(set(times)) and times[0] == event["created"]
    assert all(p["status"] == "pending" for p in posted)  # always pending on the wire
    assert [p["data"] for p in posted] == [event["data"]] * 3  # same alert, retried
    assert [(d["attempt"], d["status"]) for d in sim.deliveries] == [(0, 500), (1, 500), (2, 200)]
    recent = await api(sim, "getRecentAlerts", alert_id=alert_id)
    assert len(recent["recent_alerts"]) == 1 and recent["recent_alerts"][0]["sent_time"] == times[-1]


@pytest.mark.asyncio
async def test_gives_up_after_five_attempts(sim: TrendSpottrSimulator) -> None:
    async with Receiver(statuses=[500] * 10) as broken:
        alert_id = await setup_alert(sim, broken)
        event = await sim.deliver_now(alert_id)
        await sim.wait_for(lambda: sim.events[event["event_id"]].status == "failed", TIMEOUT)
    assert [p["attempts"] for p in broken.events()] == [0, 1, 2, 3, 4]
    assert len(sim.deliveries) == 5
    assert (await api(sim, "getRecentAlerts", alert_id=alert_id))["recent_alerts"] == []
    assert sim.stats()["failed"] == 1


@pytest.mark.asyncio
async def test_connection_errors_are_retried_too(sim: TrendSpottrSimulator) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    await api(sim, "setWebhook", url=dead, secret=SECRET)
    alert_id = (await api(sim, "createAlert", query_string="NVDA"))["alert_id"]
    event = await sim.deliver_now(alert_id)
    await sim.wait_for(lambda: sim.events[event["event_id"]].status == "failed", TIMEOUT)
    assert [d["attempt"] for d in sim.deliveries] == [0, 1, 2, 3, 4]
    assert all(d["status"] is None and "ConnectError" in d["error"] for d in sim.deliveries)


@pytest.mark.asyncio
async def test_level_filter_is_respected(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    extreme = await setup_alert(sim, receiver, query="TSLA", level_filter="ExtremeOnly")
    high = (await api(sim, "createAlert", query_string="NVDA", level_filter="HighAndExtreme"))["alert_id"]
    every = (await api(sim, "createAlert", query_string="MSFT"))["alert_id"]
    for _ in range(30):
        sim.tick()
    await sim.wait_for(lambda: len(receiver.posts) == 90, TIMEOUT)
    levels: dict[int, set[str]] = {}
    for event in receiver.events():
        levels.setdefault(event["data"]["alert_id"], set()).add(event["data"]["level"])
    assert levels[extreme] == {"Extreme"}
    assert levels[high] == {"High", "Extreme"}
    assert levels[every] == {"Elevated", "High", "Extreme"}
    with pytest.raises(ValueError):
        await sim.deliver_now(high, level="Elevated")
    assert (await sim.deliver_now(every, level="Extreme"))["data"]["level"] == "Extreme"


@pytest.mark.asyncio
async def test_paused_alerts_deliver_nothing(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    active = await setup_alert(sim, receiver, query="AAPL")
    paused = (await api(sim, "createAlert", query_string="AMZN"))["alert_id"]
    await api(sim, "setAlertState", alert_id=paused, state="paused")
    produced = sim.tick() + sim.tick()
    assert [e["data"]["alert_id"] for e in produced] == [active, active]
    await sim.wait_for(lambda: len(receiver.posts) == 2, TIMEOUT)
    assert {e["data"]["alert_id"] for e in receiver.events()} == {active}
    with pytest.raises(ValueError, match="paused"):
        await sim.deliver_now(paused)
    await api(sim, "setAlertState", alert_id=paused, state="active")
    assert (await sim.deliver_now(paused))["data"]["alert_id"] == paused


@pytest.mark.asyncio
async def test_interval_delivers_on_its_own(receiver: Receiver) -> None:
    async with TrendSpottrSimulator([KEY], interval=0.02, retry_interval=0.02) as sim:
        alert_id = await setup_alert(sim, receiver, query="META")
        await sim.wait_for(lambda: len(receiver.posts) >= 2, TIMEOUT)
    assert {e["data"]["alert_id"] for e in receiver.events()} == {alert_id}
    assert len({e["event_id"] for e in receiver.events()}) == len(receiver.posts)  # new event each time


@pytest.mark.asyncio
async def test_no_webhook_means_no_delivery(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver)
    await api(sim, "deleteWebhook")
    assert sim.tick() == []
    with pytest.raises(LookupError):
        await sim.deliver_now(alert_id)
    with pytest.raises(LookupError):
        await sim.deliver_now(12345)


@pytest.mark.asyncio
async def test_recent_alerts_and_analytics_reflect_deliveries(sim: TrendSpottrSimulator,
                                                             receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver, query="AAPL OR Apple")
    other = (await api(sim, "createAlert", query_string="XOM"))["alert_id"]
    events = [await sim.deliver_now(alert_id) for _ in range(3)]
    await sim.deliver_now(other)
    newest_first = [{k: e["data"][k] for k in ("headline", "level", "url")} | {"sent_time": e["post_time"]}
                    for e in reversed(events)]

    recent = (await api(sim, "getRecentAlerts", alert_id=alert_id))["recent_alerts"]
    assert recent == newest_first
    assert (await api(sim, "getRecentAlerts", alert_id=alert_id, max_records=2))["recent_alerts"] == newest_first[:2]
    # Same query, other clause order and case; the lookup is TrendSpottr-wide, so any key sees it.
    by_query = await api(sim, "getRecentAlertsForQuery", KEY2, query_string="apple OR AAPL")
    assert by_query["recent_alerts"] == newest_first[:3]
    one = await api(sim, "getRecentAlertsForQuery", query_string="AAPL OR Apple", max_records=1)
    assert one["recent_alerts"] == newest_first[:1]
    assert (await api(sim, "getRecentAlertsForQuery", query_string="GOOGL"))["recent_alerts"] == []

    notification_id = events[0]["data"]["notification_id"]
    first = await api(sim, "getAlertAnalytics", notification_id=notification_id)
    assert (first["sent_time"], first["url"]) == (events[0]["post_time"], events[0]["data"]["url"])
    counts = [p["count"] for p in first["volume"]]
    stamps = [p["timestamp"] for p in first["volume"]]
    assert len(counts) >= 2 and counts == sorted(set(counts)) and stamps == sorted(set(stamps))
    assert all(isinstance(v, int) for v in counts + stamps)
    later = await api(sim, "getAlertAnalytics", notification_id=notification_id)
    assert later["volume"][: len(first["volume"])] == first["volume"]  # the same series, extended
    await expect_error("TSAPI_UNKNOWN_NOTIFICATION", sim, "getAlertAnalytics", KEY2,
                       notification_id=notification_id)
    await expect_error("TSAPI_UNKNOWN_NOTIFICATION", sim, "getAlertAnalytics", notification_id=12)


@pytest.mark.asyncio
async def test_resend_and_post_raw(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver)
    event = await sim.deliver_now(alert_id)
    assert await sim.resend(event["event_id"]) == 200
    first, duplicate = receiver.events()
    assert duplicate["event_id"] == first["event_id"] and duplicate["data"] == first["data"]
    assert duplicate["attempts"] == 1 and duplicate["post_time"] > first["post_time"]
    assert sim.stats()["succeeded"] == 1
    assert len((await api(sim, "getRecentAlerts", alert_id=alert_id))["recent_alerts"]) == 1  # not twice
    with pytest.raises(LookupError):
        await sim.resend(1)

    receiver.statuses = [400]
    assert await sim.post_raw(b"\xff not json", content_type="text/plain") == 400
    _, headers, body = receiver.posts[-1]
    assert body == b"\xff not json" and headers["content-type"] == "text/plain"
    with pytest.raises(LookupError):
        await sim.post_raw(b"{}", api_key=KEY2)  # no webhook for that key


# -- HTTP control interface -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_control_endpoints(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    alert_id = await setup_alert(sim, receiver)
    base = f"{sim.base_url}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
        for url in (f"{base}/stats", f"{base}/deliver?alert_id={alert_id}&token=wrong"):
            assert (await http_client.get(url)).status_code == 403
        assert receiver.posts == []

        response = await http_client.get(f"{base}/deliver", params={"alert_id": alert_id, "level": "High",
                                                                     "token": CONTROL})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        event = response.json()
        assert receiver.events() == [event] and event["data"]["level"] == "High"

        resend = await http_client.get(f"{base}/resend", params={"event_id": event["event_id"], "token": CONTROL})
        assert resend.json() == {"status_code": 200} and len(receiver.posts) == 2

        ticked = (await http_client.get(f"{base}/tick?token={CONTROL}")).json()["events"]
        assert [e["data"]["alert_id"] for e in ticked] == [alert_id]

        assert (await http_client.get(f"{base}/fail_api?status=502&token={CONTROL}")).json()["failApiWith"] == 502
        assert (await http_client.get(f"{sim.base_url}/v1.5/alerts?method=getWebhook&key={KEY}")).status_code == 502
        assert (await http_client.get(f"{base}/fail_api?token={CONTROL}")).json()["failApiWith"] is None

        stats = (await http_client.get(f"{base}/stats?token={CONTROL}")).json()
        assert stats["events"] == 2 and stats["alerts"] == 1 and stats["accounts"] == 1

        assert (await http_client.get(f"{base}/deliver?alert_id=1&token={CONTROL}")).status_code == 404
        assert (await http_client.get(f"{base}/deliver?token={CONTROL}")).status_code == 400
        assert (await http_client.get(f"{base}/resend?event_id=1&token={CONTROL}")).status_code == 404
        assert (await http_client.get(f"{base}/nope?token={CONTROL}")).status_code == 404


@pytest.mark.asyncio
async def test_control_is_disabled_without_a_control_token() -> None:
    async with TrendSpottrSimulator([KEY], interval=None) as sim:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http_client:
            assert (await http_client.get(f"{sim.base_url}/control/stats?token=")).status_code == 403


def test_build_from_options() -> None:
    sim = build_from_options({"host": "127.0.0.1", "port": 0, "token": None, "control_token": CONTROL,
                              "seed": 3, "news_interval": 0})
    assert sim.api_keys == {"demo-api-key"} and sim.interval == 30.0 and sim.control_token == CONTROL
    sim = build_from_options({"token": ["a-key", "b-key"], "news_interval": 2.5})
    assert sim.api_keys == {"a-key", "b-key"} and sim.interval == 2.5 and sim.retry_interval == 900.0


# -- content generation (pure) --------------------------------------------------------------------


def test_generated_content_over_many_alerts() -> None:
    rng = random.Random(42)
    now = datetime(2026, 2, 6, 12, 34, 56, tzinfo=timezone.utc)
    queries = ["AAPL OR Apple", "$TSLA", "Technology", "bitcoin OR #crypto", "XYZQ", "Nestlé OR 日本株", "Nvidia"]
    for seq in range(300):
        query = queries[seq % len(queries)]
        content = trendgen.generate_alert(rng, query, now=now, seq=seq)
        assert list(content)[:3] == ["url", "headline", "description"]
        assert 250 <= len(content["description"]) <= 512, content["description"]
        assert "{" not in content["headline"] + content["description"]
        tags = content["related_hashtags"]
        assert 1 <= len(tags) <= 5 and len({t.lower() for t in tags}) == len(tags)
        url = urlsplit(content["url"])
        assert url.scheme == "https" and url.netloc and " " not in content["url"]
        if "thumbnail_url" in content:
            assert isinstance(content["thumbnail_width"], int) and isinstance(content["thumbnail_height"], int)
        if query == "AAPL OR Apple":
            assert "Apple" in content["headline"]
        if query == "Nvidia":
            assert "#NVDA" in tags


def test_query_helpers_and_volume_series() -> None:
    assert trendgen.or_clauses("AAPL OR Apple OR  iPhone") == ["AAPL", "Apple", "iPhone"]
    assert trendgen.or_clauses("ORCL or NOR") == ["ORCL or NOR"]
    assert trendgen.query_key("AAPL OR Apple") == trendgen.query_key("apple  OR aapl")
    assert trendgen.ALLOWED_LEVELS["ExtremeOnly"] == ("Extreme",)
    series = trendgen.volume_series(2**55 + 1, "High", 1_700_000_000, 1_700_003_600)
    assert series[0]["timestamp"] == 1_700_000_000 - 1800 and series[-1]["timestamp"] <= 1_700_003_600
    assert all(b["count"] > a["count"] for a, b in zip(series, series[1:]))
    assert trendgen.volume_series(2**55 + 1, "High", 1_700_000_000, 1_700_000_000) == series[:7]
