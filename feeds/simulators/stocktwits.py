"""A StockTwits Firehose sentiment stream simulator (see ../shared/providers/stocktwits-firehose.md).

`GET /sentiment[?seq_id=...]` over plain asyncio HTTP/1.1: Basic auth, gzip required (else 406), one
gzip stream per response sync-flushed after each event into chunked encoding, resume from a ring
buffer, and fault knobs, from Python or over HTTP (`/control/...`, same port). No Django here.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from . import newsgen
from .base import optional_int, query_params, switch
from .flood import flood_count
from .http import HttpSimulator, Request, basic_credentials, chunk, head, phrase, respond, watch_eof

NOT_ACCEPTABLE_TEXT = (
    "This connection requires compression. To enable compression, send an 'Accept-Encoding: gzip' "
    "header in your request and be ready to uncompress the stream as it is read on the client end.")
# 36 fixed digits + a 20-digit counter: equal-length strings compare like the numbers they spell,
# and at 56 digits they fit neither an int64 nor a float exactly, so clients must keep them as text.
SEQ_PREFIX = "495674878880760935246249940487520323"
_NASDAQ = {"AAPL", "MSFT", "NVDA", "AMD", "TSLA", "AMZN", "GOOGL", "META"}
_INDUSTRY = dict(pair.split("=") for pair in (  # newsgen has sectors only
    "AAPL=Consumer Electronics|MSFT=Software - Infrastructure|NVDA=Semiconductors|AMD=Semiconductors|"
    "TSLA=Auto Manufacturers|AMZN=Internet Retail|GOOGL=Internet Content & Information|"
    "META=Internet Content & Information|DIS=Entertainment|JPM=Banks - Diversified|V=Credit Services|"
    "XOM=Oil & Gas Integrated|CVX=Oil & Gas Integrated|JNJ=Drug Manufacturers - General|"
    "PFE=Drug Manufacturers - General|WMT=Discount Stores|BA=Aerospace & Defense").split("|"))


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

    def hang_up(self) -> None:
        self.gone = True
        self.wake.set()


class StockTwitsSimulator(HttpSimulator):
    """Knobs: fail_with (status), cut_mid_event_after, silent, oversize_next, framing ("sse" | "bare"
    | "mixed"), split_chunks, interval, keepalive_interval, emit(), backlog(), flood(), close_all().
    Observability: connection_attempts, requests, open_streams, sent (seq_ids per stream), buffer,
    wait_for()."""

    def __init__(
        self, credentials: Iterable[str] = ("demo:demo-password",), *, host: str = "127.0.0.1",
        port: int = 0, interval: float | None = 0.5, keepalive_interval: float = 15.0,
        buffer_size: int = 10_000, control_token: str | None = None, seed: int | None = None,
        framing: str = "sse", split_chunks: bool = False,
    ) -> None:
        super().__init__(host=host, control_token=control_token)
        self.credentials = set(credentials)  # "username:password"
        self._requested_port = port
        self.interval, self.keepalive_interval = interval, keepalive_interval  # interval None: emit() only
        self.framing, self.split_chunks = framing, split_chunks
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

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen(self._requested_port)
        self._spawn(self._emit_loop())

    async def stop(self) -> None:
        await self._shutdown()  # ends the emitter and every open stream too

    def url(self, seq_id: str | None = None) -> str:
        return f"http://{self._public_host}:{self.port}/sentiment" + (f"?seq_id={seq_id}" if seq_id else "")

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

    def backlog(self, count: int, *, symbols_per_message: int = 3) -> list[dict[str, Any]]:
        """Buffer `count` messages at once, each naming `symbols_per_message` symbols (a fixed
        rotation through the universe): what a client resuming by `seq_id` after a downtime
        catches up. Returns them in stream order."""
        tickers = sorted(self._companies)
        if not 0 < symbols_per_message <= len(tickers):
            raise ValueError(f"symbols_per_message must be 1..{len(tickers)}")
        start = len(self.buffer)
        return [self.emit([tickers[(start + i + j) % len(tickers)] for j in range(symbols_per_message)])
                for i in range(count)]

    def flood(self, count: int) -> dict[str, Any]:
        """Generate `count` messages at once (as emit() does, symbols picked as usual) and queue
        them on every open stream, which sends them as fast as its client reads (each write waits
        for the socket to drain). Returns what will be sent: messages and the mentions they make
        (one per symbol named), and the last seq_id."""
        count = flood_count(count)
        messages = [self.emit() for _ in range(count)]
        return {"messages": count, "mentions": sum(len(m["symbols"]) for m in messages),
                "last_seq_id": messages[-1]["seq_id"]}

    async def close_all(self) -> int:
        """End every open stream cleanly (gzip trailer + terminating chunk); returns how many."""
        victims = set(self._streams)
        for stream in victims:
            stream.closing = True
        self._wake_all()
        await self.wait_for(lambda: not victims & self._streams)
        return len(victims)

    def _wake_all(self) -> None:
        for stream in self._streams:
            stream.wake.set()
        self._notify()

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

    async def _route(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        url, headers = request.url, request.headers
        self.requests.append((request.target, headers))
        if url.path != "/sentiment":
            return await respond(writer, 404, "Not Found\n")
        if request.method != "GET":
            return await respond(writer, 405, "Method Not Allowed\n", headers={"Allow": "GET"})
        self.connection_attempts += 1
        self._notify()
        # An outage comes before anything else: a failing front end answers without checking.
        if self.fail_with:
            return await respond(writer, self.fail_with, f"{phrase(self.fail_with)}\n")
        if basic_credentials(headers.get("authorization", "")) not in self.credentials:
            return await respond(writer, 401, "Unauthorized: invalid credentials\n",
                                 headers={"WWW-Authenticate": 'Basic realm="firestream"'})
        codings = {c.split(";")[0].strip().lower() for c in headers.get("accept-encoding", "").split(",")}
        if "gzip" not in codings:  # minimal: a "gzip;q=0" would still count as accepted
            return await respond(writer, 406, {"response": {"status": 406},
                                               "errors": [{"message": NOT_ACCEPTABLE_TEXT}]})
        await self._serve_stream(reader, writer, query_params(url.query, keep_blank=True).get("seq_id"))

    # -- /control/<action>: see SimulatorBase; an empty value clears a numeric knob ----------

    def _control_emit(self, query: dict[str, str]) -> dict[str, Any]:
        symbols = [s for s in query.get("symbols", "").split(",") if s.strip()] or None
        score = float(query["sentiment_score"]) if query.get("sentiment_score") else None
        return self.emit(symbols, score)

    def _control_backlog(self, query: dict[str, str]) -> dict[str, Any]:
        messages = self.backlog(optional_int(query, "count") or 0,
                                symbols_per_message=optional_int(query, "symbols") or 3)
        return {"count": len(messages), "last_seq_id": messages[-1]["seq_id"] if messages else None}

    async def _control_close(self, query: dict[str, str]) -> dict[str, Any]:
        return {"closed": await self.close_all()}

    def _control_flood(self, query: dict[str, str]) -> dict[str, Any]:
        return self.flood(query["count"])

    def _control_interval(self, query: dict[str, str]) -> None:
        """`?seconds=` between automatic messages; empty or 0 pauses them."""
        seconds = float(query.get("seconds") or 0)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.interval = seconds or None

    def _control_fail(self, query: dict[str, str]) -> None:
        self.fail_with = optional_int(query, "status")

    def _control_cut(self, query: dict[str, str]) -> None:
        self.cut_mid_event_after = optional_int(query, "after")

    def _control_oversize(self, query: dict[str, str]) -> None:
        self.oversize_next = optional_int(query, "bytes")

    def _control_silent(self, query: dict[str, str]) -> None:
        self.silent = switch(query)

    def _stats(self) -> dict[str, Any]:
        return {"connection_attempts": self.connection_attempts, "open_streams": self.open_streams,
                "sent": sum(map(len, self.sent)), "buffered": len(self.buffer),
                "last_seq_id": self.buffer[-1].seq_id if self.buffer else None, "fail_with": self.fail_with,
                "cut_mid_event_after": self.cut_mid_event_after, "silent": self.silent,
                "oversize_next": self.oversize_next, "framing": self.framing, "interval": self.interval,
                "pending": sum(len(stream.pending) for stream in self._streams)}

    # -- the stream --------------------------------------------------------------------------

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            seq_id: str | None) -> None:
        writer.write(head(200, {"Content-Type": "text/event-stream", "Content-Encoding": "gzip",
                                 "Cache-Control": "no-cache", "Transfer-Encoding": "chunked",
                                 "Connection": "close"}))
        await writer.drain()
        stream = _Stream(writer, self.cut_mid_event_after)
        # Replay and registration happen without an await in between: no gap, no duplicate.
        stream.pending.extend(self._replay_after(seq_id))
        self.sent.append(stream.sent)
        self._streams.add(stream)
        self._notify()
        watcher = asyncio.create_task(watch_eof(reader, stream.hang_up))
        try:
            await self._pump(stream)
        finally:
            watcher.cancel()
            self._streams.discard(stream)
            self._notify()

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
                stream.writer.write(chunk(stream.gzip.flush(zlib.Z_FINISH)) + b"0\r\n\r\n")
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
                self._notify()
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
        stream.writer.write(b"".join(map(chunk, pieces)))
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
