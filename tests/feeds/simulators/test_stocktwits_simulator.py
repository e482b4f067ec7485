"""The StockTwits Firehose sentiment simulator, driven over real loopback sockets.

Clients are httpx (+ httpx-sse), which decompresses gzip incrementally like our real consumer,
and a raw socket where the bytes on the wire matter (chunk boundaries, sync flushes). No sleeps
for synchronisation: every wait is on a condition bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import zlib
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
from httpx_sse import ServerSentEvent, aconnect_sse

from feeds.simulators import newsgen
from feeds.simulators.stocktwits import NOT_ACCEPTABLE_TEXT, StockTwitsSimulator, build_from_options

USER, PASSWORD = "alice", "s3cret"
CONTROL = "ctl-secret"
TIMEOUT = 5.0
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SYMBOL_FIELDS = {"id", "symbol", "title", "exchange", "sector", "industry"}


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[StockTwitsSimulator]:
    async with StockTwitsSimulator([f"{USER}:{PASSWORD}", "bob:pw"], interval=None, control_token=CONTROL,
                                   seed=7, keepalive_interval=60) as simulator:
        yield simulator


def http(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=(USER, PASSWORD), timeout=TIMEOUT, **kwargs)


async def next_event(events: AsyncIterator[Any]) -> dict[str, Any]:
    return json.loads((await asyncio.wait_for(anext(events), TIMEOUT)).data)


async def take(events: AsyncIterator[Any], n: int) -> list[dict[str, Any]]:
    return [await next_event(events) for _ in range(n)]


@asynccontextmanager
async def sse(sim: StockTwitsSimulator, client: httpx.AsyncClient, seq_id: str | None = None,
              streams: int = 1) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """Connect and wait until the server has registered the stream (so emits reach it)."""
    async with aconnect_sse(client, "GET", sim.url(seq_id)) as source:
        assert source.response.status_code == 200
        await sim.wait_for(lambda: sim.open_streams == streams)
        yield source.aiter_sse()


# -- raw HTTP helpers ---------------------------------------------------------------------------


async def raw_get(sim: StockTwitsSimulator, path: str = "/sentiment", *, auth: bool = True,
                  gzip: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{sim.port}", "Accept: text/event-stream"]
    if auth:
        lines.append("Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    if gzip:
        lines.append("Accept-Encoding: gzip")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return reader, writer, int(status_line.split()[1]), headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One HTTP chunk's payload (b"" for the terminating chunk)."""
    size = int((await asyncio.wait_for(reader.readline(), TIMEOUT)).strip(), 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), TIMEOUT)
    assert data.endswith(b"\r\n")
    return data[:-2]


def check_message(message: dict[str, Any]) -> None:
    assert set(message) == {"message_id", "seq_id", "created_at", "user_id", "sentiment_score", "symbols"}
    assert isinstance(message["message_id"], int) and isinstance(message["user_id"], int)
    assert isinstance(message["seq_id"], str) and re.fullmatch(r"\d{56}", message["seq_id"])
    assert CREATED_AT.match(message["created_at"])
    score = message["sentiment_score"]
    assert isinstance(score, float | int) and -1 <= score <= 1 and round(score, 3) == score
    assert 1 <= len(message["symbols"]) <= 3
    for symbol in message["symbols"]:
        assert set(symbol) == SYMBOL_FIELDS
        assert isinstance(symbol["id"], int) and symbol["exchange"] in {"NASDAQ", "NYSE"}
        assert symbol["title"] and symbol["sector"] and symbol["industry"]


# -- status codes -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("mallory", PASSWORD)])
async def test_missing_or_wrong_credentials_get_401(sim: StockTwitsSimulator, auth: Any) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(sim.url(), auth=auth)
    assert response.status_code == 401
    assert response.text and len(response.text) < 200
    assert response.headers["www-authenticate"].startswith("Basic")
    assert sim.connection_attempts == 1 and sim.open_streams == 0


@pytest.mark.asyncio
async def test_malformed_authorization_header_gets_401(sim: StockTwitsSimulator) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for value in ("Basic !!!not-base64", "Bearer abc", "Basic " + base64.b64encode(b"nocolon").decode()):
            assert (await client.get(sim.url(), headers={"Authorization": value})).status_code == 401


@pytest.mark.asyncio
async def test_without_gzip_the_answer_is_406_with_the_documented_text(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        response = await client.get(sim.url(), headers={"Accept-Encoding": "identity"})
    assert response.status_code == 406
    assert NOT_ACCEPTABLE_TEXT in response.json()["errors"][0]["message"]
    # A raw client that sends no Accept-Encoding at all gets the same.
    reader, writer, status, headers = await raw_get(sim, gzip=False)
    assert status == 406 and headers["connection"] == "close"
    body = await asyncio.wait_for(reader.read(), TIMEOUT)  # the server closes after the response
    assert len(body) == int(headers["content-length"]) and NOT_ACCEPTABLE_TEXT.encode() in body
    writer.close()


@pytest.mark.asyncio
async def test_fail_with_knob_answers_that_status_until_cleared(sim: StockTwitsSimulator) -> None:
    sim.fail_with = 503
    async with http() as client:
        response = await client.get(sim.url())
        assert response.status_code == 503 and "Service Unavailable" in response.text
        sim.fail_with = None
        async with client.stream("GET", sim.url()) as ok:
            assert ok.status_code == 200
    assert sim.connection_attempts == 2
    assert [path for path, _ in sim.requests] == ["/sentiment", "/sentiment"]
    assert sim.requests[0][1]["accept-encoding"].startswith("gzip")


@pytest.mark.asyncio
async def test_unknown_path_malformed_request_and_wrong_method(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        assert (await client.get(f"http://127.0.0.1:{sim.port}/stream")).status_code == 404
        assert (await client.post(sim.url())).status_code == 405
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"NONSENSE\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 400 ")
    writer.close()
    assert sim.connection_attempts == 0  # only GETs of /sentiment are stream attempts


# -- the stream ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_headers_and_documented_message_shape(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        async with sse(sim, client) as events:
            # Tickers are case-insensitive; PLTR is outside the universe.
            sent = [sim.emit(["aapl"], 0.8541), sim.emit(["TSLA", "NVDA", "PLTR"])]
            got = await take(events, 2)
    assert got == sent
    for message in got:
        check_message(message)
    assert got[0]["sentiment_score"] == 0.854
    assert got[0]["symbols"] == [{"id": got[0]["symbols"][0]["id"], "symbol": "AAPL", "title": "Apple Inc.",
                                  "exchange": "NASDAQ", "sector": "Technology", "industry": "Consumer Electronics"}]
    assert [s["symbol"] for s in got[1]["symbols"]] == ["TSLA", "NVDA", "PLTR"]


@pytest.mark.asyncio
async def test_response_headers_are_gzip_chunked_event_stream(sim: StockTwitsSimulator) -> None:
    async with http() as client, client.stream("GET", sim.url()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers


@pytest.mark.asyncio
async def test_first_event_arrives_whole_in_one_chunk_before_anything_else(sim: StockTwitsSimulator) -> None:
    # The stream never ends here, so receiving the event at all proves the per-event sync flush;
    # on the wire it is exactly one chunk that decompresses to exactly one SSE event.
    reader, writer, status, _ = await raw_get(sim)
    assert status == 200
    await sim.wait_for(lambda: sim.open_streams == 1)
    message = sim.emit(["MSFT"])
    decoder = zlib.decompressobj(31)
    text = decoder.decompress(await read_chunk(reader)).decode()
    assert text == f"data: {json.dumps(message, separators=(',', ':'))}\n\n"
    writer.close()
    # httpx (gzip decoded incrementally) sees it too, with the stream still open.
    async with http() as client:
        async with sse(sim, client) as events:
            message = sim.emit()
            assert await next_event(events) == message
            assert sim.open_streams == 1


@pytest.mark.asyncio
async def test_seq_ids_are_56_digit_increasing_strings_beyond_float_and_int64(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        async with sse(sim, client) as events:
            sent = [sim.emit() for _ in range(25)]
            got = await take(events, 25)
    assert got == sent
    seq_ids = [m["seq_id"] for m in got]
    assert all(len(s) == 56 and s.isdigit() for s in seq_ids)
    assert seq_ids == sorted(seq_ids) and len(set(seq_ids)) == 25
    assert all(int(s) > 2**63 and int(float(s)) != int(s) for s in seq_ids)
    ids = [m["message_id"] for m in got]
    assert all(a < b for a, b in zip(ids, ids[1:]))
    assert sim.sent == [seq_ids]


@pytest.mark.asyncio
async def test_all_clients_see_the_same_sequence(sim: StockTwitsSimulator) -> None:
    async with http() as a_client, http() as b_client:
        async with sse(sim, a_client, streams=1) as a_events, sse(sim, b_client, streams=2) as b_events:
            sent = [sim.emit() for _ in range(3)]
            assert await take(a_events, 3) == await take(b_events, 3) == sent
    await sim.wait_for(lambda: sim.open_streams == 0)  # hang-ups are noticed while idle


@pytest.mark.asyncio
async def test_automatic_messages_are_realistic() -> None:
    async with StockTwitsSimulator(["u:p"], interval=0.005, seed=3) as sim:
        async with httpx.AsyncClient(auth=("u", "p"), timeout=TIMEOUT) as client:
            async with aconnect_sse(client, "GET", sim.url()) as source:
                got = await take(source.aiter_sse(), 60)
    for message in got:
        check_message(message)
    assert [m["seq_id"] for m in got] == sorted(m["seq_id"] for m in got)
    tickers = [s["symbol"] for m in got for s in m["symbols"]]
    assert set(tickers) <= set(newsgen.UNIVERSE)
    assert all(len({s["symbol"] for s in m["symbols"]}) == len(m["symbols"]) for m in got)  # no repeats
    assert len({m["sentiment_score"] for m in got}) > 30
    assert tickers.count("NVDA") + tickers.count("TSLA") > tickers.count("JNJ") + tickers.count("V")


@pytest.mark.asyncio
async def test_keep_alive_comment_when_idle() -> None:
    async with StockTwitsSimulator(["u:p"], interval=None, keepalive_interval=0.05) as sim:
        async with httpx.AsyncClient(auth=("u", "p"), timeout=TIMEOUT) as client:
            async with client.stream("GET", sim.url()) as response:
                text = await asyncio.wait_for(anext(response.aiter_text()), TIMEOUT)
    assert text == ": keep-alive\n\n"


# -- resume -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_resume_replays_exactly_the_messages_after_seq_id(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        async with sse(sim, client) as events:
            first = [sim.emit() for _ in range(5)]
            assert await take(events, 5) == first
        await sim.wait_for(lambda: sim.open_streams == 0)
        missed = [sim.emit() for _ in range(3)]  # while disconnected
        async with sse(sim, client, seq_id=first[2]["seq_id"]) as events:
            live = sim.emit()
            got = await take(events, 6)
    assert got == first[3:] + missed + [live]  # no gap, no duplicate, then live


@pytest.mark.asyncio
async def test_a_backlog_of_multi_symbol_messages_is_served_to_a_resuming_client(sim: StockTwitsSimulator) -> None:
    anchor = sim.emit()
    backlog = sim.backlog(40, symbols_per_message=7)
    assert all(len({s["symbol"] for s in m["symbols"]}) == 7 for m in backlog)
    assert [m["seq_id"] for m in backlog] == sorted(m["seq_id"] for m in backlog)
    async with http() as client, httpx.AsyncClient(timeout=TIMEOUT) as control:
        async with sse(sim, client, seq_id=backlog[9]["seq_id"]) as events:
            assert await take(events, 30) == backlog[10:]
        answer = (await control.get(f"http://127.0.0.1:{sim.port}/control/backlog",
                                    params={"token": CONTROL, "count": 2, "symbols": 4})).json()
    assert answer == {"count": 2, "last_seq_id": sim.buffer[-1].seq_id}
    symbols = [len(json.loads(item.text)["symbols"]) for item in sim.buffer]
    assert symbols == [len(anchor["symbols"])] + [7] * 40 + [4] * 2


@pytest.mark.asyncio
@pytest.mark.parametrize("cursor", ["bogus", "1" * 56, "0" * 56, "9" * 56, "123"])
async def test_unknown_or_too_old_seq_id_starts_live(cursor: str) -> None:
    async with StockTwitsSimulator(["u:p"], interval=None, buffer_size=3) as sim:
        old = [sim.emit() for _ in range(5)]  # the first two fell out of the buffer
        async with httpx.AsyncClient(auth=("u", "p"), timeout=TIMEOUT) as client:
            for seq_id in (cursor, old[0]["seq_id"]):
                async with sse(sim, client, seq_id=seq_id) as events:
                    live = sim.emit()
                    assert await next_event(events) == live
                await sim.wait_for(lambda: sim.open_streams == 0)


@pytest.mark.asyncio
async def test_cut_mid_event_breaks_the_client_and_resume_gets_the_cut_event(sim: StockTwitsSimulator) -> None:
    sim.cut_mid_event_after = 2
    sent = [sim.emit() for _ in range(4)]  # buffered before connecting
    received: list[dict[str, Any]] = []
    async with http() as client:
        with pytest.raises(httpx.TransportError):  # RemoteProtocolError: incomplete chunked read
            async with aconnect_sse(client, "GET", sim.url(sent[0]["seq_id"])) as source:
                async for event in source.aiter_sse():
                    received.append(json.loads(event.data))
        assert received == sent[1:3]  # two complete events, then the cut
        assert sim.sent == [[m["seq_id"] for m in sent[1:3]]]
        sim.cut_mid_event_after = None
        async with sse(sim, client, seq_id=received[-1]["seq_id"]) as events:
            assert await next_event(events) == sent[3]


@pytest.mark.asyncio
async def test_cut_is_mid_chunk_and_mid_event_without_terminating_chunk(sim: StockTwitsSimulator) -> None:
    sim.cut_mid_event_after = 0
    reader, writer, _, _ = await raw_get(sim)
    await sim.wait_for(lambda: sim.open_streams == 1)
    message = sim.emit()
    size = int((await asyncio.wait_for(reader.readline(), TIMEOUT)).strip(), 16)
    rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server drops the connection
    assert 0 < len(rest) < size
    partial = zlib.decompressobj(31).decompress(rest).decode(errors="replace")
    assert partial.startswith("data: {") and not partial.endswith("\n\n")
    assert json.dumps(message, separators=(",", ":")) not in partial
    writer.close()


# -- framing and transport variants -------------------------------------------------------------


@pytest.mark.asyncio
async def test_bare_framing_is_json_lines(sim: StockTwitsSimulator) -> None:
    sim.framing = "bare"
    async with http() as client, client.stream("GET", sim.url()) as response:
        await sim.wait_for(lambda: sim.open_streams == 1)
        sent = [sim.emit() for _ in range(3)]
        lines = response.aiter_lines()
        got = [json.loads(await asyncio.wait_for(anext(lines), TIMEOUT)) for _ in sent]
    assert got == sent


def tolerant_parse(lines: list[str]) -> list[dict[str, Any]]:
    """The parser rule from the provider notes: strip `data:`, skip `id:`, comments and blanks."""
    out = []
    for line in lines:
        if not line or line.startswith((":", "id:")):
            continue
        out.append(json.loads(line.removeprefix("data:").strip()))
    return out


@pytest.mark.asyncio
async def test_mixed_framing_uses_sse_sse_with_id_and_bare(sim: StockTwitsSimulator) -> None:
    sim.framing = "mixed"
    async with http() as client, client.stream("GET", sim.url()) as response:
        await sim.wait_for(lambda: sim.open_streams == 1)
        sent = [sim.emit() for _ in range(12)]
        lines_iter, lines = response.aiter_lines(), []
        while len(tolerant_parse(lines)) < len(sent):
            lines.append(await asyncio.wait_for(anext(lines_iter), TIMEOUT))
    assert tolerant_parse(lines) == sent
    styles = {int(m["seq_id"]) % 3 for m in sent}
    assert styles == {0, 1, 2}  # all three framings appeared
    assert any(line.startswith("id: ") for line in lines) and any(line.startswith("{") for line in lines)


@pytest.mark.asyncio
async def test_split_chunks_are_tiny_and_still_decode() -> None:
    async with StockTwitsSimulator(["alice:s3cret"], interval=None, split_chunks=True, seed=1) as sim:
        reader, writer, _, _ = await raw_get(sim)
        await sim.wait_for(lambda: sim.open_streams == 1)
        message = sim.emit(["AAPL", "AMD"])
        expected = f"data: {json.dumps(message, separators=(',', ':'))}\n\n"
        decoder, text, sizes = zlib.decompressobj(31), "", []
        while text != expected:
            chunk = await read_chunk(reader)
            sizes.append(len(chunk))
            text += decoder.decompress(chunk).decode()  # ASCII payload: safe to decode per piece
        writer.close()
        assert len(sizes) > 10 and all(1 <= n <= 7 for n in sizes)
        async with http() as client:
            async with sse(sim, client) as events:
                sent = [sim.emit() for _ in range(5)]
                assert await take(events, 5) == sent


@pytest.mark.asyncio
async def test_silent_holds_everything_back_until_lifted() -> None:
    async with StockTwitsSimulator(["alice:s3cret"], interval=None, keepalive_interval=0.02) as sim:
        sim.silent = True
        reader, writer, status, _ = await raw_get(sim)
        assert status == 200
        await sim.wait_for(lambda: sim.open_streams == 1)
        message = sim.emit()
        # Absence check (bounded): ten keep-alive periods pass without a single byte.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), 0.2)
        assert sim.sent == [[]] and sim.open_streams == 1
        sim.silent = False
        text = zlib.decompressobj(31).decompress(await read_chunk(reader)).decode()
        assert text == f"data: {json.dumps(message, separators=(',', ':'))}\n\n"  # the held event, first
        writer.close()


@pytest.mark.asyncio
async def test_oversize_next_pads_exactly_one_event(sim: StockTwitsSimulator) -> None:
    sim.oversize_next = 2 * 1024 * 1024
    async with http() as client:
        async with sse(sim, client) as events:
            big, normal = sim.emit(), sim.emit()
            got = await take(events, 2)
    assert got == [big, normal]
    assert len(json.dumps(big, separators=(",", ":"))) == 2 * 1024 * 1024 and "body" in big
    assert "body" not in normal and sim.oversize_next is None


@pytest.mark.asyncio
async def test_close_all_ends_streams_cleanly(sim: StockTwitsSimulator) -> None:
    async with http() as client:
        async with aconnect_sse(client, "GET", sim.url()) as source:
            await sim.wait_for(lambda: sim.open_streams == 1)
            message = sim.emit()
            events = source.aiter_sse()
            assert await next_event(events) == message
            assert await sim.close_all() == 1
            rest = [e async for e in events]  # ends without a transport error
    assert rest == [] and sim.open_streams == 0


# -- HTTP control interface ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_control_requires_the_token(sim: StockTwitsSimulator) -> None:
    base = f"http://127.0.0.1:{sim.port}/control"
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for url in (f"{base}/fail?status=503", f"{base}/fail?status=503&token=wrong", f"{base}/stats"):
            assert (await client.get(url)).status_code == 403
    assert sim.fail_with is None
    async with StockTwitsSimulator(interval=None) as no_control, httpx.AsyncClient(timeout=TIMEOUT) as client:
        assert (await client.get(f"http://127.0.0.1:{no_control.port}/control/stats?token=")).status_code == 403


@pytest.mark.asyncio
async def test_control_actions(sim: StockTwitsSimulator) -> None:
    async with http() as client, httpx.AsyncClient(timeout=TIMEOUT) as control:
        async def act(action: str, **params: str) -> httpx.Response:
            return await control.get(f"http://127.0.0.1:{sim.port}/control/{action}",
                                     params={**params, "token": CONTROL})

        async with sse(sim, client) as events:
            emitted = (await act("emit", symbols="XOM,CVX", sentiment_score="-0.25")).json()
            assert await next_event(events) == emitted
            assert [s["symbol"] for s in emitted["symbols"]] == ["XOM", "CVX"]
            assert emitted["sentiment_score"] == -0.25

            assert (await act("oversize", bytes="5000")).json()["oversize_next"] == 5000
            padded = (await act("emit")).json()
            assert await next_event(events) == padded and len(json.dumps(padded, separators=(",", ":"))) == 5000
            assert (await act("silent", on="1")).json()["silent"] is True and sim.silent
            assert (await act("silent", on="0")).json()["silent"] is False
            assert (await act("cut", after="3")).json()["cut_mid_event_after"] == 3
            assert (await act("cut", after="")).json()["cut_mid_event_after"] is None
            assert (await act("close")).json() == {"closed": 1}

        assert (await act("fail", status="503")).json()["fail_with"] == 503
        assert (await client.get(sim.url())).status_code == 503
        assert (await act("fail", status="")).json()["fail_with"] is None

        stats = (await act("stats")).json()
        assert stats["connection_attempts"] == 2 and stats["open_streams"] == 0 and stats["sent"] == 2
        assert stats["last_seq_id"] == sim.buffer[-1].seq_id and stats["buffered"] == 2
        assert (await act("fail", status="abc")).status_code == 400
        assert (await act("nope")).status_code == 404


# -- construction and the management command ----------------------------------------------------


def test_build_from_options_defaults_and_overrides() -> None:
    sim = build_from_options({"host": "127.0.0.1", "port": 0, "token": None, "control_token": None,
                              "seed": None, "news_interval": 0})
    assert sim.credentials == {"demo:demo-password"} and sim.interval == 0.5
    sim = build_from_options({"host": "0.0.0.0", "port": 9999, "token": ["a:b", "c:d"],
                              "control_token": "x", "seed": 4, "news_interval": 2.0})
    assert sim.credentials == {"a:b", "c:d"} and sim.interval == 2.0 and sim.control_token == "x"


@pytest.mark.asyncio
async def test_simulate_command_serves_the_stream_until_sigterm() -> None:
    manage = Path(__file__).resolve().parents[3] / "manage.py"
    env = {**os.environ, "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(manage), "simulate", "stocktwits", "--port", "0", "--token", f"{USER}:{PASSWORD}",
        "--news-interval", "0.05", "--control-token", CONTROL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        match = re.fullmatch(r"stocktwits simulator listening on ws://127\.0\.0\.1:(\d+)/sentiment\n", line)
        assert match, line
        async with http() as client:
            url = f"http://127.0.0.1:{match.group(1)}/sentiment"
            async with aconnect_sse(client, "GET", url) as source:
                check_message(await next_event(source.aiter_sse()))  # automatic messages flow
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
