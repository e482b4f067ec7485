"""The TrendSpottr Alerts API client: exact requests and error mapping against httpx.MockTransport,
then all eleven methods end to end against the simulator over real loopback sockets (the sync
client runs in a worker thread via asyncio.to_thread while the simulator serves on the loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio

from feeds.providers.trendspottr.client import (
    TrendSpottrAPIError, TrendSpottrClient, TrendSpottrError, TrendSpottrHTTPError, TrendSpottrProtocolError,
    TrendSpottrUnavailable, validate_query,
)
from feeds.simulators.trendspottr import TrendSpottrSimulator

KEY = "ts-api-key-9f8e7d6c5b4a"
SECRET = "hook-secret-123"
BIG = 2**64 - 1  # the largest unsigned 64-bit id


class Recorder:
    """A MockTransport handler: records requests, answers with `reply(request)`."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda request: ok())

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    def client(self, base_url: str = "https://api.api.trendspottr.com") -> TrendSpottrClient:
        return TrendSpottrClient(KEY, base_url, transport=httpx.MockTransport(self))

    @property
    def params(self) -> dict[str, str]:
        return dict(self.requests[-1].url.params)


def ok(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", **fields})


def raw(content: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=content, headers={"Content-Type": "application/json"})


ALERT_INFO = {"alert_id": 2**63 + 5, "query_string": "AAPL", "userid": "u1", "state": "active",
              "level_filter": "All", "last_sent_time": 0}
RECENT = [{"sent_time": 1_366_808_682, "headline": "Nokia phone gets Whatsapp button", "level": "Elevated",
           "url": "http://www.bbc.co.uk/news/technology-22278955"}]
# (call, HTTP method, doc method name, extra parameters, canned answer fields)
CASES: list[tuple[Callable[[TrendSpottrClient], Any], str, str, dict[str, str], dict[str, Any]]] = [
    (lambda c: c.set_webhook("https://example.com/hook", SECRET), "POST", "setWebhook",
     {"url": "https://example.com/hook", "secret": SECRET}, {}),
    (lambda c: c.get_webhook(), "GET", "getWebhook", {}, {"url": "https://x.io/h", "secret": "s"}),
    (lambda c: c.delete_webhook(), "POST", "deleteWebhook", {}, {}),
    (lambda c: c.create_alert("AAPL OR Apple", "HighAndExtreme", userid="user7"), "POST", "createAlert",
     {"query_string": "AAPL OR Apple", "level_filter": "HighAndExtreme", "userid": "user7"}, {"alert_id": 7}),
    (lambda c: c.create_alert("AAPL"), "POST", "createAlert", {"query_string": "AAPL", "level_filter": "All"},
     {"alert_id": 7}),
    (lambda c: c.delete_alert(BIG), "POST", "deleteAlert", {"alert_id": str(BIG)}, {}),
    (lambda c: c.set_alert_state(5, "paused"), "POST", "setAlertState", {"alert_id": "5", "state": "paused"}, {}),
    (lambda c: c.set_alert_level(5, "ExtremeOnly"), "POST", "setAlertLevel",
     {"alert_id": "5", "level_filter": "ExtremeOnly"}, {}),
    (lambda c: c.get_alert_info(5), "GET", "getAlertInfo", {"alert_id": "5"}, ALERT_INFO),
    (lambda c: c.get_recent_alerts_for_query("Technology"), "GET", "getRecentAlertsForQuery",
     {"query_string": "Technology", "max_records": "5"}, {"recent_alerts": RECENT}),
    (lambda c: c.get_recent_alerts(5, max_records=50), "GET", "getRecentAlerts",
     {"alert_id": "5", "max_records": "50"}, {"recent_alerts": RECENT}),
    (lambda c: c.get_recent_alerts(5), "GET", "getRecentAlerts", {"alert_id": "5", "max_records": "10"},
     {"recent_alerts": []}),
    (lambda c: c.get_alert_analytics(60479), "GET", "getAlertAnalytics", {"notification_id": "60479"},
     {"sent_time": 1, "url": "https://x.io/a", "volume": [{"timestamp": 1, "count": 2}]}),
]


# -- request shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("call, http_method, method, extra, answer", CASES, ids=[c[2] for c in CASES])
def test_request_shape(call: Callable[[TrendSpottrClient], Any], http_method: str, method: str,
                       extra: dict[str, str], answer: dict[str, Any]) -> None:
    recorder = Recorder(lambda request: ok(**answer))
    call(recorder.client())
    (request,) = recorder.requests
    assert request.method == http_method
    assert (request.url.scheme, request.url.host, request.url.path) == ("https", "api.api.trendspottr.com",
                                                                         "/v1.5/alerts")
    assert list(request.url.params)[:2] == ["method", "key"]
    assert recorder.params == {"method": method, "key": KEY, **extra}
    assert request.content == b""  # POST too: every parameter is a URL parameter


def test_results_are_typed_values() -> None:
    volume = [{"timestamp": 1, "count": 2}, {"timestamp": 2, "count": 5}]
    answers = iter([ok(alert_id=BIG), ok(**ALERT_INFO), ok(recent_alerts=RECENT), ok(url="https://x.io", secret="s"),
                    ok(sent_time=9, url="https://x.io/a", volume=volume)])
    client = Recorder(lambda request: next(answers, None) or ok()).client()
    assert client.create_alert("AAPL") == BIG
    assert client.get_alert_info(5) == ALERT_INFO
    assert client.get_recent_alerts(5) == RECENT
    assert client.get_webhook() == {"url": "https://x.io", "secret": "s"}
    assert client.get_alert_analytics(1) == {"sent_time": 9, "url": "https://x.io/a", "volume": volume}
    for result in (client.set_webhook("https://a.b/c", "s"), client.delete_alert(1), client.delete_webhook()):
        assert result is None


def test_strings_travel_as_utf8() -> None:
    recorder = Recorder(lambda request: ok(alert_id=1))
    recorder.client().create_alert("Nestlé OR 日本株", userid="ユーザー")
    url = recorder.requests[0].url
    assert b"Nestl%C3%A9" in url.raw_path and b"%E6%97%A5%E6%9C%AC%E6%A0%AA" in url.raw_path
    assert recorder.params["query_string"] == "Nestlé OR 日本株"
    # Answers are decoded as UTF-8 whatever the Content-Type says.
    body = json.dumps({"status": "OK", "url": "https://x.io/ü", "secret": "ß"}, ensure_ascii=False).encode()
    latin = {"Content-Type": "text/plain; charset=latin-1"}
    client = Recorder(lambda request: httpx.Response(200, content=body, headers=latin)).client()
    assert client.get_webhook() == {"url": "https://x.io/ü", "secret": "ß"}


def test_64_bit_ids() -> None:
    text = '{"status": "OK", "alert_id": 18446744073709551615}'.encode()
    assert Recorder(lambda request: raw(text)).client().create_alert("AAPL") == BIG  # no float on the way
    recorder = Recorder()
    client = recorder.client()
    client.delete_alert(2**53 + 1)
    assert recorder.params["alert_id"] == "9007199254740993"
    for bad in (-1, 2**64, True, 1.0, "5", None):
        with pytest.raises(ValueError):
            client.delete_alert(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.get_alert_analytics(bad)  # type: ignore[arg-type]
    assert len(recorder.requests) == 1
    for answer in ('{"status": "OK", "alert_id": 1.5e19}', '{"status": "OK", "alert_id": 18446744073709551616}',
                   '{"status": "OK", "alert_id": -1}', '{"status": "OK", "alert_id": "7"}',
                   '{"status": "OK", "alert_id": true}', '{"status": "OK"}'):
        with pytest.raises(TrendSpottrProtocolError):
            Recorder(lambda request, a=answer: raw(a.encode())).client().create_alert("AAPL")


# -- error mapping --------------------------------------------------------------------------------


def test_status_error_raises_typed_error() -> None:
    answer = {"status": "ERROR", "error_code": "TSAPI_NO_WEBHOOK", "error_msg": "No webhook configured"}
    client = Recorder(lambda request: httpx.Response(200, json=answer)).client()
    with pytest.raises(TrendSpottrError) as excinfo:
        client.get_webhook()
    error = excinfo.value
    assert isinstance(error, TrendSpottrAPIError)
    assert (error.error_code, error.error_msg) == ("TSAPI_NO_WEBHOOK", "No webhook configured")
    assert error.method == "getWebhook"
    assert "TSAPI_NO_WEBHOOK" in str(error)


@pytest.mark.parametrize("status", [201, 301, 302, 400, 401, 404, 429, 500, 502, 503])
def test_other_http_statuses(status: int) -> None:
    headers = {"Location": "https://elsewhere.example/steal"} if 300 <= status < 400 else {}
    recorder = Recorder(lambda request: httpx.Response(status, json={"status": "OK"}, headers=headers))
    with pytest.raises(TrendSpottrHTTPError) as excinfo:
        recorder.client().get_webhook()
    assert excinfo.value.status_code == status and isinstance(excinfo.value, TrendSpottrAPIError)
    assert len(recorder.requests) == 1  # redirects are not followed: the key stays home


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"", b"[1, 2]", b'"OK"', b"null",
                                  b'{"no_status": 1}', b'{"status": "MAYBE"}', b'{"status": "OK"', b"\xff\xfe{}"])
def test_malformed_answers(body: bytes) -> None:
    with pytest.raises(TrendSpottrProtocolError):
        Recorder(lambda request: raw(body)).client().delete_webhook()


def test_malformed_fields() -> None:
    bad_item = {**RECENT[0], "sent_time": "1"}
    for answer in (ok(recent_alerts="none"), ok(recent_alerts=[1]), ok(recent_alerts=[bad_item])):
        with pytest.raises(TrendSpottrProtocolError):
            Recorder(lambda request, a=answer: a).client().get_recent_alerts(1)
    with pytest.raises(TrendSpottrProtocolError):
        volume = [{"timestamp": 1, "count": 2.5}]
        Recorder(lambda request: ok(sent_time=1, url="u", volume=volume)).client().get_alert_analytics(1)
    with pytest.raises(TrendSpottrProtocolError):
        Recorder(lambda request: ok(url=None, secret="s")).client().get_webhook()


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                   httpx.ConnectTimeout("slow"), httpx.RemoteProtocolError("reset")])
def test_network_errors_are_unavailable(error: httpx.TransportError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(TrendSpottrUnavailable) as excinfo:
        Recorder(fail).client().get_alert_info(1)
    assert excinfo.value.error is error and excinfo.value.__cause__ is error
    assert isinstance(excinfo.value, TrendSpottrAPIError)


def test_timeouts_are_explicit() -> None:
    client = Recorder().client()
    timeout = client._http.timeout
    assert (timeout.connect, timeout.read) == (5.0, 15.0)


# -- https only -----------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://api.api.trendspottr.com", "https://proxy.internal:8443/",
                                      "http://127.0.0.1:8080", "http://127.9.8.7", "http://localhost:1234",
                                      "http://LOCALHOST", "http://[::1]:9000/"])
def test_allowed_base_urls(base_url: str) -> None:
    recorder = Recorder()
    recorder.client(base_url).delete_webhook()
    assert recorder.requests[0].url.path == "/v1.5/alerts"


@pytest.mark.parametrize("base_url", ["http://api.api.trendspottr.com", "http://10.0.0.1", "http://128.0.0.1",
                                      "http://localhost.evil.com", "http://127.0.0.1.nip.io", "ftp://127.0.0.1",
                                      "api.api.trendspottr.com", "", "https://"])
def test_refused_base_urls(base_url: str) -> None:
    with pytest.raises(ValueError):
        TrendSpottrClient(KEY, base_url, transport=httpx.MockTransport(Recorder()))


def test_api_key_is_required() -> None:
    for key in ("", "   ", None):
        with pytest.raises(ValueError):
            TrendSpottrClient(key, transport=httpx.MockTransport(Recorder()))  # type: ignore[arg-type]


# -- validation before any call ------------------------------------------------------------------


@pytest.mark.parametrize("query", ["AAPL", "AAPL OR Apple", " OR ".join(f"T{i}" for i in range(10)),
                                   " or ".join(f"T{i}" for i in range(20)), "ORCL OR NOR", "x" * 1000,
                                   "Nestlé OR 日本株", "(iPhone OR iPad) -rumor"])
def test_valid_queries(query: str) -> None:
    assert validate_query(query) is None


@pytest.mark.parametrize("query, message", [
    ("", "non-empty"), ("   ", "non-empty"), (None, "non-empty"), ("x" * 1001, "1001 characters"),
    (" OR ".join(f"T{i}" for i in range(11)), "11 OR clauses"), ("AAPL OR", "empty OR clause"),
    ("OR AAPL", "empty OR clause"), ("AAPL OR  OR Apple", "empty OR clause"), ("bad \ud800", "Unicode"),
])
def test_invalid_queries(query: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_query(query)


@pytest.mark.parametrize("call", [
    lambda c: c.create_alert("AAPL", level_filter="all"),
    lambda c: c.create_alert("AAPL", level_filter="Everything"),
    lambda c: c.create_alert(" OR ".join(["x"] * 11)),
    lambda c: c.create_alert("AAPL", userid="u" * 65),
    lambda c: c.create_alert("AAPL", userid=""),
    lambda c: c.set_alert_level(1, "High"),
    lambda c: c.set_alert_state(1, "enabled"),
    lambda c: c.set_alert_state(1, "Active"),
    lambda c: c.get_recent_alerts(1, max_records=0),
    lambda c: c.get_recent_alerts(1, max_records=51),
    lambda c: c.get_recent_alerts_for_query("AAPL OR", 5),
    lambda c: c.get_recent_alerts_for_query("AAPL", max_records=True),
    lambda c: c.set_webhook("ftp://example.com/x", SECRET),
    lambda c: c.set_webhook("example.com/x", SECRET),
    lambda c: c.set_webhook("https://example.com/x", ""),
    lambda c: c.set_webhook("https://example.com/x", "é" * 33),
])
def test_bad_arguments_never_reach_the_wire(call: Callable[[TrendSpottrClient], Any]) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError):
        call(recorder.client())
    assert recorder.requests == []


# -- the key stays secret -------------------------------------------------------------------------


def _echo_key_failures() -> list[Callable[[httpx.Request], httpx.Response]]:
    """Answers that each try hard to leak the key (and the URL that carries it)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out reading {request.url} with {KEY}", request=request)

    return [
        lambda request: httpx.Response(200, json={"status": "ERROR", "error_code": "TSAPI_BAD_KEY",
                                                  "error_msg": f"Invalid key {KEY} for {request.url}"}),
        lambda request: httpx.Response(502, text=f"proxy error for {request.url}"),
        lambda request: httpx.Response(200, text=f"<html>{request.url}</html>"),
        refuse, timeout,
    ]


class _Collect(logging.Handler):
    """Sits on the `httpx` logger itself, so it sees records before any root handler's filter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_key_never_in_exceptions_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # as if settings had not raised it to WARNING
    at_source = _Collect()
    logging.getLogger("httpx").addHandler(at_source)
    messages = []
    try:
        for reply in _echo_key_failures():
            client = Recorder(reply).client()
            assert KEY not in repr(client)
            with pytest.raises(TrendSpottrAPIError) as excinfo:
                client.create_alert("AAPL")
            messages += [str(excinfo.value), repr(excinfo.value)]
        Recorder().client().delete_webhook()  # a successful call: httpx logs its URL at INFO
    finally:
        logging.getLogger("httpx").removeHandler(at_source)
    assert all(KEY not in message for message in messages), messages
    assert any(m.startswith("HTTP Request: POST") and "key=***" in m for m in at_source.messages)
    assert not any(KEY in m for m in at_source.messages)
    assert "HTTP Request: POST" in caplog.text and KEY not in caplog.text


# -- end to end against the simulator -------------------------------------------------------------


class Receiver:
    """A loopback webhook endpoint that answers 200 and records each body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length = 0
            await reader.readline()  # request line
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.bodies.append(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[TrendSpottrSimulator]:
    async with TrendSpottrSimulator([KEY, "other-key-1234"], interval=None, retry_interval=0.02, seed=11) as s:
        yield s


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.mark.asyncio
async def test_all_eleven_methods_end_to_end(sim: TrendSpottrSimulator, receiver: Receiver) -> None:
    client = TrendSpottrClient(KEY, sim.base_url)
    call = asyncio.to_thread  # the sync client blocks: keep it off the loop the simulator runs on
    try:
        with pytest.raises(TrendSpottrError) as excinfo:
            await call(client.get_webhook)
        assert excinfo.value.error_code == "TSAPI_NO_WEBHOOK"

        await call(client.set_webhook, receiver.url, SECRET)
        assert await call(client.get_webhook) == {"url": receiver.url, "secret": SECRET}

        alert_id = await call(client.create_alert, "AAPL OR Apple", "HighAndExtreme", "user7")
        assert alert_id > 2**53
        with pytest.raises(TrendSpottrError) as excinfo:
            await call(client.create_alert, "AAPL OR Apple", "All", "user7")
        assert excinfo.value.error_code == "TSAPI_DUPLICATE_ALERT"
        assert await call(client.get_alert_info, alert_id) == {
            "alert_id": alert_id, "query_string": "AAPL OR Apple", "userid": "user7", "state": "active",
            "level_filter": "HighAndExtreme", "last_sent_time": 0}

        await call(client.set_alert_state, alert_id, "paused")
        await call(client.set_alert_level, alert_id, "ExtremeOnly")
        info = await call(client.get_alert_info, alert_id)
        assert (info["state"], info["level_filter"]) == ("paused", "ExtremeOnly")
        await call(client.set_alert_state, alert_id, "active")

        event = await sim.deliver_now(alert_id)
        assert json.loads(receiver.bodies[-1]) == event and event["data"]["level"] == "Extreme"
        expected = [{"sent_time": event["post_time"], "headline": event["data"]["headline"],
                     "level": "Extreme", "url": event["data"]["url"]}]
        assert await call(client.get_recent_alerts, alert_id) == expected
        assert await call(client.get_recent_alerts_for_query, "Apple OR AAPL", 50) == expected
        assert (await call(client.get_alert_info, alert_id))["last_sent_time"] == event["post_time"]

        analytics = await call(client.get_alert_analytics, event["data"]["notification_id"])
        assert (analytics["sent_time"], analytics["url"]) == (event["post_time"], event["data"]["url"])
        counts = [point["count"] for point in analytics["volume"]]
        assert len(counts) >= 2 and counts == sorted(set(counts))

        await call(client.delete_alert, alert_id)
        with pytest.raises(TrendSpottrError) as excinfo:
            await call(client.get_alert_info, alert_id)
        assert excinfo.value.error_code == "TSAPI_UNKNOWN_ALERT"

        await call(client.delete_webhook)
        with pytest.raises(TrendSpottrError) as excinfo:
            await call(client.create_alert, "TSLA")
        assert excinfo.value.error_code == "TSAPI_NO_WEBHOOK"
    finally:
        client.close()
    reads = {"getWebhook", "getAlertInfo", "getRecentAlerts", "getRecentAlertsForQuery", "getAlertAnalytics"}
    assert {c["method"] for c in sim.calls} == reads | {"setWebhook", "createAlert", "setAlertState",
                                                       "setAlertLevel", "deleteAlert", "deleteWebhook"}
    assert all(c["http_method"] == ("GET" if c["method"] in reads else "POST") for c in sim.calls)


@pytest.mark.asyncio
async def test_failures_end_to_end(sim: TrendSpottrSimulator) -> None:
    with TrendSpottrClient("wrong-key-0000", sim.base_url) as stranger:
        with pytest.raises(TrendSpottrError) as excinfo:
            await asyncio.to_thread(stranger.get_webhook)
        assert excinfo.value.error_code == "TSAPI_BAD_KEY"
    with TrendSpottrClient(KEY, sim.base_url) as client:
        sim.fail_api_with = 503
        with pytest.raises(TrendSpottrHTTPError) as http_error:
            await asyncio.to_thread(client.get_webhook)
        assert http_error.value.status_code == 503
        sim.fail_api_with = None
        with pytest.raises(TrendSpottrError) as excinfo:
            await asyncio.to_thread(client.get_alert_analytics, 1)
        assert excinfo.value.error_code == "TSAPI_UNKNOWN_NOTIFICATION"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TrendSpottrClient(KEY, f"http://127.0.0.1:{port}") as down:
        with pytest.raises(TrendSpottrUnavailable) as unavailable:
            await asyncio.to_thread(down.delete_webhook)
    assert isinstance(unavailable.value.error, httpx.ConnectError) and KEY not in str(unavailable.value)
