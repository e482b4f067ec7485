"""The plain-HTTP simulators' shared HTTP/1.1 (feeds/simulators/http.py): request parsing from a
fed StreamReader, response bytes, and HttpSimulator on a real loopback socket."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio

from feeds.simulators import http
from feeds.simulators.http import (
    BadRequest, HttpSimulator, Request, basic_credentials, chunk, head, phrase, read_request, respond, watch_eof,
)

CONTROL = "ctl-secret"
TIMEOUT = 5.0


async def parse(data: bytes, *, max_body: int | None = None, eof: bool = True) -> Request | None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return await read_request(reader, max_body=max_body)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_request_line_and_headers() -> None:
    request = await parse(b"GET /a/b?x=1&y= HTTP/1.1\r\nHost: h\r\nX-Tag: one\r\nx-tag: two\r\n"
                          b"Accept-Encoding:gzip\r\n\r\nignored body")
    assert request is not None
    assert (request.method, request.target, request.body) == ("GET", "/a/b?x=1&y=", b"")
    assert request.url.path == "/a/b" and request.url.query == "x=1&y="
    # Names lower-cased, values trimmed, repeated headers joined as RFC 9110 allows.
    assert request.headers == {"host": "h", "x-tag": "one, two", "accept-encoding": "gzip"}


@pytest.mark.asyncio
async def test_bare_line_feeds_and_a_leading_empty_line_are_accepted() -> None:
    request = await parse(b"\r\nPOST /p HTTP/1.0\nContent-Length: 0\n\n", eof=False)
    assert request is not None and (request.method, request.headers) == ("POST", {"content-length": "0"})


@pytest.mark.asyncio
async def test_body_only_when_allowed() -> None:
    data = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    assert (await parse(data)).body == b""  # type: ignore[union-attr]
    assert (await parse(data, max_body=5)).body == b"hello"  # type: ignore[union-attr]
    assert (await parse(b"GET / HTTP/1.1\r\n\r\n", max_body=5)).body == b""  # type: ignore[union-attr]
    for bad in (data.replace(b"5", b"6"),  # shorter than announced
                data.replace(b"5", b"x"), data.replace(b"5", b"-1")):
        with pytest.raises(BadRequest):
            await parse(bad, max_body=5)
    with pytest.raises(BadRequest, match="too large"):
        await parse(data, max_body=4)


@pytest.mark.asyncio
@pytest.mark.parametrize("data", [
    b"NONSENSE\r\n\r\n",
    b"garbage\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET / SPDY/3\r\n\r\n",
    b"GET http://example.com/ HTTP/1.1\r\n\r\n",  # absolute form: we are nobody's proxy
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
])
async def test_malformed_requests(data: bytes) -> None:
    with pytest.raises(BadRequest):
        await parse(data)


@pytest.mark.asyncio
async def test_oversized_head() -> None:
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    with pytest.raises(BadRequest):
        await parse(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    with pytest.raises(BadRequest):
        await parse(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")


@pytest.mark.asyncio
async def test_a_client_that_leaves_early_gets_none() -> None:
    assert await parse(b"") is None
    assert await parse(b"\r\n") is None
    assert await parse(b"GET / HTTP/1.1\r\nHost: h\r\n") is None
    assert await parse(b"GET / HTTP/1.1\r\nHo") is None


@pytest.mark.asyncio
async def test_a_stalled_client_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "READ_TIMEOUT", 0.05)
    with pytest.raises(TimeoutError):
        await parse(b"GET / HTTP/1.1\r\n", eof=False)


# -- response pieces ----------------------------------------------------------------------------


def test_status_line_headers_and_chunks() -> None:
    assert head(200, {"A": "1", "B": "2"}) == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
    assert head(599, {}) == b"HTTP/1.1 599 Error\r\n\r\n"
    assert phrase(503) == "Service Unavailable" and phrase(299) == "Error"
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1A\r\n" + b"x" * 26 + b"\r\n"
    assert chunk(b"") == b""  # an empty chunk would end the body


def test_basic_credentials() -> None:
    encoded = base64.b64encode(b"alice:s3cret:colon").decode()
    assert basic_credentials(f"Basic {encoded}") == "alice:s3cret:colon"
    assert basic_credentials(f"basic  {encoded} ") == "alice:s3cret:colon"
    assert basic_credentials(f"Bearer {encoded}") is None
    assert basic_credentials("Basic not*base64") is None
    assert basic_credentials("Basic " + base64.b64encode(b"\xff\xfe").decode()) is None
    assert basic_credentials("") is None


# -- HttpSimulator on a socket ------------------------------------------------------------------


class Echo(HttpSimulator):
    max_body = 64

    def __init__(self, control_token: str | None = CONTROL) -> None:
        super().__init__(host="127.0.0.1", control_token=control_token)
        self.seen: list[Request] = []
        self.mood = "calm"

    async def start(self) -> None:
        await self._listen(0)

    async def stop(self) -> None:
        await self._shutdown()

    def _stats(self) -> dict[str, Any]:
        return {"seen": len(self.seen), "mood": self.mood}

    def _control_mood(self, query: dict[str, str]) -> None:
        self.mood = query["mood"]

    async def _route(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen.append(request)
        self._notify()
        if request.url.path == "/hang":
            await asyncio.Event().wait()
        elif request.url.path == "/text":
            await respond(writer, 418, "short and stout\n", headers={"X-Extra": "yes"})
        elif request.url.path == "/bytes":
            await respond(writer, 200, b"\x00\x01", "application/x-thing")
        elif request.url.path == "/eof":
            gone = asyncio.Event()
            await watch_eof(reader, gone.set)
            assert gone.is_set()
        else:
            await respond(writer, 200, {"method": request.method, "body": request.body.decode()})


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[Echo]:
    async with Echo() as sim:
        yield sim


async def raw(sim: Echo, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(data)
    writer.write_eof()  # half-close: all sent, still reading
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_requests_reach_the_route_and_responses_close(echo: Echo) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.post(f"http://127.0.0.1:{echo.port}/x", content=b"payload")
        assert response.json() == {"method": "POST", "body": "payload"}
        assert response.headers["content-type"] == "application/json"
        assert response.headers["connection"] == "close"
        text = await client.get(f"http://127.0.0.1:{echo.port}/text")
        assert (text.status_code, text.text) == (418, "short and stout\n")
        assert text.headers["content-type"] == "text/plain; charset=utf-8" and text.headers["x-extra"] == "yes"
        data = await client.get(f"http://127.0.0.1:{echo.port}/bytes")
        assert data.content == b"\x00\x01" and data.headers["content-type"] == "application/x-thing"
    assert [r.target for r in echo.seen] == ["/x", "/text", "/bytes"]


@pytest.mark.asyncio
async def test_malformed_requests_get_400(echo: Echo) -> None:
    answer = await raw(echo, b"NONSENSE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and answer.endswith(b"\r\n\r\nBad Request\n")
    assert (await raw(echo, b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert await raw(echo, b"") == b""  # connected and left: nothing to answer
    assert echo.seen == []


@pytest.mark.asyncio
async def test_control_endpoints_are_served_before_the_route(echo: Echo) -> None:
    base = f"http://127.0.0.1:{echo.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        forbidden = await client.get(f"{base}/stats", params={"token": "wrong"})
        assert forbidden.status_code == 403 and forbidden.json() == {"error": "Forbidden"}
        changed = await client.get(f"{base}/mood", params={"token": CONTROL, "mood": "grumpy"})
        assert changed.status_code == 200 and changed.json() == {"seen": 0, "mood": "grumpy"}
        assert changed.headers["content-type"] == "application/json"
        assert (await client.get(f"{base}/mood", params={"token": CONTROL})).status_code == 400
        assert (await client.get(f"{base}/nope", params={"token": CONTROL})).status_code == 404
    assert echo.seen == []
    async with Echo(control_token=None) as disabled, httpx.AsyncClient(timeout=TIMEOUT) as client:
        assert (await client.get(f"http://127.0.0.1:{disabled.port}/control/stats?token=")).status_code == 403


@pytest.mark.asyncio
async def test_hang_up_is_noticed_while_idle(echo: Echo) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
    writer.write(b"GET /eof HTTP/1.1\r\n\r\n")
    await echo.wait_for(lambda: len(echo.seen) == 1)
    assert len(echo._tasks) == 1  # the handler, waiting on watch_eof
    writer.close()
    await echo.wait_for(lambda: not echo._tasks)


@pytest.mark.asyncio
async def test_stop_ends_requests_still_being_served() -> None:
    sim = Echo()
    await sim.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GET /hang HTTP/1.1\r\n\r\n")
    await sim.wait_for(lambda: len(sim.seen) == 1)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", sim.port)  # never sends
    await asyncio.wait_for(sim.stop(), TIMEOUT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    assert await asyncio.wait_for(idle_reader.read(), TIMEOUT) == b""
    assert not sim._tasks
    writer.close()
    idle_writer.close()
