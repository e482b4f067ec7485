"""A StockTwits Firehose sentiment stream simulator (see ../shared/providers/stocktwits-firehose.md).

`GET /sentiment[?seq_id=...]` over plain asyncio HTTP/1.1: Basic auth, gzip required (else 406), one
gzip stream per response sync-flushed after each event into chunked encoding, resume from a ring
buffer, and fault knobs, from Python or over HTTP (`/control/...`, same port). No Django here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from . import newsgen

NOT_ACCEPTABLE_TEXT = (
    "This connection requires compression. To enable compression, send an 'Accept-Encoding: gzip' "
    "header in your request and be ready to uncompress the stream as it is read on the client end.")
# 36 fixed digits + a 20-digit counter: equal-length strings compare like the numbers they spell,
# and at 56 digits they fit neither an int64 nor a float exactly, so clients must keep them as text.
SEQ_PREFIX = "495674878880760935246249940487520323"
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_NASDAQ = {"AAPL", "MSFT", "NVDA", "AMD", "TSLA", "AMZN", "GOOGL", "META"}
_INDUSTRY = dict(pair.split("=") for pair in (  # newsgen has sectors only
    "AAPL=Consumer Electronics|MSFT=Software - Infrastructure|NVDA=Semiconductors|AMD=Semiconductors|"
    "TSLA=Auto Manufacturers|AMZN=Internet Retail|GOOGL=Internet Content & Information|"
    "META=Internet Content & Information|DIS=Entertainment|JPM=Banks - Diversified|V=Credit Services|"
    "XOM=Oil & Gas Integrated|CVX=Oil & Gas Integrated|JNJ=Drug Manufacturers - General|"
    "PFE=Drug Manufacturers - General|WMT=Discount Stores|BA=Aerospace & Defense").split("|"))
# /control/<action>?<param>=N sets the knob; an empty value clears it.
_INT_KNOBS = {"fail": ("status", "fail_with"), "cut": ("after", "cut_mid_event_after"),
              "oversize": ("bytes", "oversize_next")}


@dataclass(frozen=True)
class _Item:
    seq_id: str
    text: str  # the message JSON, encoded once and shared by every connection


@dataclass(eq=False)
class _Stream:
    writer: asyncio.StreamWriter
    cut_after: int | None  # snapshot of the knob: it applies per new connection
    pending: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[str] = field(default_factory=list)
    closing: bool = False  # close cleanly (gzip trailer + terminating chunk)
    gone: bool = False  # the client hung up
    # wbits=31: deflate with gzip framing; one compressor for the whole response body.
    gzip: Any = field(default_factory=lambda: zlib.compressobj(6, zlib.DEFLATED, 31))


class StockTwitsSimulator:
    """Knobs: fail_with (status), cut_mid_event_after, silent, oversize_next, framing ("sse" | "bare"
    | "mixed"), split_chunks, interval, keepalive_interval, emit(), close_all(). Observability:
    connection_attempts, requests, open_streams, sent (seq_ids per stream), buffer, wait_for()."""

    def __init__(
        self, credentials: Iterable[str] = ("demo:demo-password",), *, host: str = "127.0.0.1",
        port: int = 0, interval: float | None = 0.5, keepalive_interval: float = 15.0,
        buffer_size: int = 10_000, control_token: str | None = None, seed: int | None = None,
        framing: str = "sse", split_chunks: bool = False,
    ) -> None:
        self.credentials = set(credentials)  # "username:password"
        self.host, self._requested_port = host, port
        self.interval, self.keepalive_interval = interval, keepalive_interval  # interval None: emit() only
        self.control_token, self.framing, self.split_chunks = control_token, framing, split_chunks
        self.fail_with: int | None = None
        self.cut_mid_event_after: int | None = None
        self.oversize_next: int | None = None
        self._silent, self.connection_attempts = False, 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: list[list[str]] = []  # one list per accepted stream, in order
        self.buffer: deque[_Item] = deque(maxlen=buffer_size)  # stands in for the 24 h window
        self._rng = random.Random(seed)
        self._chunk_rng = random.Random(seed)  # separate, so chunking never changes the content
        self._message_id = 60_000_000 + self._rng.randrange(1_000_000)
        self._seq = time.time_ns()  # grows across restarts: an old run's cursor stays "unknown"
        self._users = [self._rng.randrange(10_000, 9_000_000) for _ in range(400)]
        self._moods: dict[str, float] = {}
        self._companies = dict(newsgen.UNIVERSE)
        # Big names are talked about more: weight by the square root of daily dollar volume.
        self._weights = {t: (c.avg_volume * c.base_price) ** 0.5 for t, c in self._companies.items()}
        self._streams: set[_Stream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._emitter: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        self._emitter = asyncio.create_task(self._emit_loop())

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        # Python 3.11's wait_closed() does not wait for handlers, so cancel them ourselves.
        tasks = [*self._tasks, *([self._emitter] if self._emitter else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()

    async def __aenter__(self) -> StockTwitsSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the simulator first"
        return self._server.sockets[0].getsockname()[1]

    def url(self, seq_id: str | None = None) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/sentiment" + (f"?seq_id={seq_id}" if seq_id else "")

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def silent(self) -> bool:
        return self._silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._silent = value
        self._wake_all()  # held-back events go out as soon as the silence ends

    # -- knobs -------------------------------------------------------------------------------

    def emit(self, symbols: list[str] | None = None, sentiment_score: float | None = None) -> dict[str, Any]:
        """Generate one message now, buffer it and queue it on every open stream; returns it."""
        companies = [self._company(s) for s in symbols] if symbols else self._pick_companies()
        moods = [self._drift(c.ticker) for c in companies]
        if sentiment_score is None:
            sentiment_score = sum(moods) / len(moods) + self._rng.gauss(0, 0.3)
        self._message_id += self._rng.randint(1, 40)  # messages without sentiment fall in between
        self._seq += self._rng.randint(1, 9_999)
        message: dict[str, Any] = {
            "message_id": self._message_id,
            "seq_id": f"{SEQ_PREFIX}{self._seq:020d}",
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            # A few heavy posters, a long tail of occasional ones.
            "user_id": self._users[min(int((self._rng.paretovariate(1.1) - 1) * 20), len(self._users) - 1)],
            "sentiment_score": round(max(-1.0, min(1.0, float(sentiment_score))), 3),
            "symbols": [_symbol(c) for c in companies],
        }
        if self.oversize_next:
            _pad(message, self.oversize_next)
            self.oversize_next = None
        item = _Item(message["seq_id"], json.dumps(message, separators=(",", ":")))
        self.buffer.append(item)
        for stream in self._streams:
            stream.pending.append(item)
        self._wake_all()
        return json.loads(item.text)  # a copy: callers can't alter what was sent

    async def close_all(self) -> int:
        """End every open stream cleanly (gzip trailer + terminating chunk); returns how many."""
        victims = set(self._streams)
        for stream in victims:
            stream.closing = True
        self._wake_all()
        await self.wait_for(lambda: not victims & self._streams)
        return len(victims)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` is true: woken by state changes, re-checked every 10 ms."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.01)
                except TimeoutError:
                    pass

    def _wake_all(self) -> None:
        for stream in self._streams:
            stream.wake.set()
        self._changed.set()

    # -- content -----------------------------------------------------------------------------

    def _company(self, ticker: str) -> newsgen.Company:
        ticker = ticker.strip().upper()
        return self._companies.get(ticker) or self._companies.setdefault(
            ticker, newsgen.make_company(self._rng, ticker))

    def _pick_companies(self) -> list[newsgen.Company]:
        count = self._rng.choices((1, 2, 3), weights=(75, 20, 5))[0]
        tickers: list[str] = []
        while len(tickers) < count:
            ticker = self._rng.choices(list(self._weights), weights=list(self._weights.values()))[0]
            tickers += [ticker] if ticker not in tickers else []
        return [self._companies[t] for t in tickers]

    def _drift(self, ticker: str) -> float:
        """Each symbol's crowd mood wanders slowly (mean-reverting), skewed bullish like the site."""
        mood = self._moods.get(ticker, self._rng.gauss(0.1, 0.2))
        self._moods[ticker] = max(-0.8, min(0.8, 0.97 * mood + self._rng.gauss(0.003, 0.05)))
        return self._moods[ticker]

    def _frame(self, item: _Item) -> str:
        style = self.framing
        if style == "mixed":  # deterministic by seq_id, so tests know what each event looks like
            style = ("sse", "sse-id", "bare")[int(item.seq_id) % 3]
        if style == "bare":
            return item.text + "\n"
        return (f"id: {item.seq_id}\n" if style == "sse-id" else "") + f"data: {item.text}\n\n"

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            await (self._route(reader, writer, *request) if request else _respond(writer, 400, "Bad Request\n"))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stalled: nothing more to say
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's start_server logs a handler that ends cancelled)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     method: str, target: str, headers: dict[str, str]) -> None:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path.startswith("/control/"):
            return await self._control(writer, url.path.removeprefix("/control/"), query)
        self.requests.append((target, headers))
        if url.path != "/sentiment":
            return await _respond(writer, 404, "Not Found\n")
        if method != "GET":
            return await _respond(writer, 405, "Method Not Allowed\n", {"Allow": "GET"})
        self.connection_attempts += 1
        self._changed.set()
        # An outage comes before anything else: a failing front end answers without checking.
        if self.fail_with:
            return await _respond(writer, self.fail_with, f"{_PHRASES.get(self.fail_with, 'Error')}\n")
        if _basic_credentials(headers.get("authorization", "")) not in self.credentials:
            return await _respond(writer, 401, "Unauthorized: invalid credentials\n",
                                  {"WWW-Authenticate": 'Basic realm="firestream"'})
        codings = {c.split(";")[0].strip().lower() for c in headers.get("accept-encoding", "").split(",")}
        if "gzip" not in codings:  # minimal: a "gzip;q=0" would still count as accepted
            return await _respond(writer, 406, {"response": {"status": 406},
                                                 "errors": [{"message": NOT_ACCEPTABLE_TEXT}]})
        await self._serve_stream(reader, writer, query.get("seq_id"))

    async def _control(self, writer: asyncio.StreamWriter, action: str, query: dict[str, str]) -> None:
        if self.control_token is None or query.pop("token", None) != self.control_token:
            return await _respond(writer, 403, {"error": "Forbidden"})
        try:
            if action == "emit":
                symbols = [s for s in query.get("symbols", "").split(",") if s.strip()] or None
                score = float(query["sentiment_score"]) if query.get("sentiment_score") else None
                return await _respond(writer, 200, self.emit(symbols, score))
            if action == "close":
                return await _respond(writer, 200, {"closed": await self.close_all()})
            if action in _INT_KNOBS:
                param, knob = _INT_KNOBS[action]
                setattr(self, knob, int(query[param]) if query.get(param) else None)
            elif action == "silent":
                self.silent = query.get("on", "1").strip().lower() in {"1", "true", "yes", "on"}
            elif action != "stats":
                return await _respond(writer, 404, {"error": f"Unknown action {action!r}"})
        except (KeyError, ValueError) as exc:
            return await _respond(writer, 400, {"error": f"Bad request: {exc}"})
        await _respond(writer, 200, {
            "connection_attempts": self.connection_attempts, "open_streams": self.open_streams,
            "sent": sum(map(len, self.sent)), "buffered": len(self.buffer),
            "last_seq_id": self.buffer[-1].seq_id if self.buffer else None, "fail_with": self.fail_with,
            "cut_mid_event_after": self.cut_mid_event_after, "silent": self.silent,
            "oversize_next": self.oversize_next, "framing": self.framing})

    # -- the stream --------------------------------------------------------------------------

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            seq_id: str | None) -> None:
        writer.write(_head(200, {"Content-Type": "text/event-stream", "Content-Encoding": "gzip",
                                 "Cache-Control": "no-cache", "Transfer-Encoding": "chunked",
                                 "Connection": "close"}))
        await writer.drain()
        stream = _Stream(writer, self.cut_mid_event_after)
        # Replay and registration happen without an await in between: no gap, no duplicate.
        stream.pending.extend(self._replay_after(seq_id))
        self.sent.append(stream.sent)
        self._streams.add(stream)
        self._changed.set()
        watcher = asyncio.create_task(_watch_eof(reader, stream))
        try:
            await self._pump(stream)
        finally:
            watcher.cancel()
            self._streams.discard(stream)
            self._changed.set()

    def _replay_after(self, seq_id: str | None) -> list[_Item]:
        """Buffered items after `seq_id`; an unknown or too old cursor starts live, like the real one."""
        if not (seq_id and self.buffer and len(seq_id) == len(self.buffer[0].seq_id)
                and self.buffer[0].seq_id <= seq_id <= self.buffer[-1].seq_id):
            return []
        return [item for item in self.buffer if item.seq_id > seq_id]

    async def _pump(self, stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while not stream.gone:
            if stream.closing:
                stream.writer.write(_chunk(stream.gzip.flush(zlib.Z_FINISH)) + b"0\r\n\r\n")
                await stream.writer.drain()
                return
            if self.silent:  # frozen: hold everything back, keep-alives included
                await _sleep_until_woken(stream, None)
                last_write = loop.time()
            elif stream.pending:
                item = stream.pending.popleft()
                if stream.cut_after is not None and len(stream.sent) >= stream.cut_after:
                    return await self._cut(stream, item)
                await self._send(stream, self._frame(item))
                stream.sent.append(item.seq_id)
                self._changed.set()
                last_write = loop.time()
            elif not await _sleep_until_woken(stream, last_write + self.keepalive_interval - loop.time()):
                await self._send(stream, "\n" if self.framing == "bare" else ": keep-alive\n\n")
                last_write = loop.time()

    async def _send(self, stream: _Stream, text: str) -> None:
        piece = _compress(stream, text)
        pieces = [piece]
        if self.split_chunks:  # awkward boundaries for decoders: HTTP chunks of 1-7 bytes
            pieces, start = [], 0
            while start < len(piece):
                size = self._chunk_rng.randint(1, 7)
                pieces.append(piece[start:start + size])
                start += size
        stream.writer.write(b"".join(map(_chunk, pieces)))
        await stream.writer.drain()

    async def _cut(self, stream: _Stream, item: _Item) -> None:
        """Send half of the event's compressed bytes (mid-chunk, mid-block, mid-event), then abort."""
        piece = _compress(stream, self._frame(item))
        transport = stream.writer.transport
        transport.set_write_buffer_limits(high=0)  # so drain() waits until the socket took it all
        stream.writer.write(f"{len(piece):X}\r\n".encode() + piece[: len(piece) // 2])
        await stream.writer.drain()
        transport.abort()  # no terminating chunk: the body is visibly incomplete

    async def _emit_loop(self) -> None:
        while True:  # `interval` is read each time, so it can be changed (or zeroed) at runtime
            await asyncio.sleep(self.interval or 0.5)
            if self.interval:
                self.emit()


def _compress(stream: _Stream, text: str) -> bytes:
    # The sync flush emits everything compressed so far, so the event decodes on arrival.
    return stream.gzip.compress(text.encode()) + stream.gzip.flush(zlib.Z_SYNC_FLUSH)


async def _sleep_until_woken(stream: _Stream, timeout: float | None) -> bool:
    """True if woken (new event, knob change, hang-up), False if `timeout` passed first."""
    stream.wake.clear()
    try:
        await asyncio.wait_for(stream.wake.wait(), None if timeout is None else max(0.0, timeout))
        return True
    except TimeoutError:
        return False


async def _watch_eof(reader: asyncio.StreamReader, stream: _Stream) -> None:
    """Notice a client hang-up while idle (otherwise only the next write would find out)."""
    try:
        while await reader.read(4096):
            pass  # nothing is expected after the request; ignore whatever comes
    except ConnectionError:
        pass
    stream.gone = True
    stream.wake.set()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """Request line + headers; None if malformed. Bodies are never read: every response closes."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except asyncio.LimitOverrunError:
        return None
    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():  # also rejects obsolete line folding
            return None
        key = name.lower()  # repeated headers combine, as RFC 9110 allows for list-valued ones
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return parts[0], parts[1], headers


def _basic_credentials(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode() if scheme.lower() == "basic" else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):X}\r\n".encode() + data + b"\r\n" if data else b""  # empty would terminate


async def _respond(writer: asyncio.StreamWriter, status: int, body: str | dict[str, Any],
                   extra: dict[str, str] | None = None) -> None:
    """A whole response, then close: we never keep a connection alive for a second request."""
    is_json = isinstance(body, dict)
    data = (json.dumps(body) if is_json else str(body)).encode()
    content_type = "application/json" if is_json else "text/plain; charset=utf-8"
    writer.write(_head(status, {"Content-Type": content_type, "Content-Length": str(len(data)),
                                "Connection": "close", **(extra or {})}) + data)
    await writer.drain()


def _symbol(company: newsgen.Company) -> dict[str, Any]:
    return {"id": zlib.crc32(company.ticker.encode()) % 9_000_000 + 1_000,  # stable across runs
            "symbol": company.ticker, "title": company.name,
            "exchange": "NASDAQ" if company.ticker in _NASDAQ else "NYSE",
            "sector": company.sector, "industry": _INDUSTRY.get(company.ticker, company.sector)}


def _pad(message: dict[str, Any], size: int) -> None:
    """Add a `body` so the compact JSON is `size` bytes (or as close above as the fields allow)."""
    base = len(json.dumps({**message, "body": ""}, separators=(",", ":")))
    message["body"] = "x" * max(0, size - base)


def build_from_options(options: dict[str, Any]) -> StockTwitsSimulator:
    """Build from `manage.py simulate stocktwits` options (see that command)."""
    interval = options.get("news_interval")
    return StockTwitsSimulator(
        options.get("token") or ["demo:demo-password"],
        host=options.get("host", "127.0.0.1"),
        port=options.get("port", 0),
        interval=interval if interval and interval > 0 else 0.5,  # the stream is never empty
        control_token=options.get("control_token"),
        seed=options.get("seed"),
    )
