"""A StockNews.live WebSocket server simulator (see ../shared/providers/stocknews-websocket.md).

Speaks the documented protocol on `/ws?token=...` (connected / news / error messages, 1008
closes with JSON reasons, client rate limits) and adds knobs for failure injection, usable
directly from Python or over HTTP (`/control/...` on the same port) when run as a process.
Pure asyncio + websockets: no Django here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import SplitResult, quote, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from feeds.outbox import SlidingWindow

from . import newsgen
from .base import coerce_fields, flag, optional_int, query_params, switch
from .flood import Flood, flood_count, flood_rate, send_flood, stamp_ns
from .wsbase import WebSocketSimulator, close_connections

POLICY_VIOLATION = 1008
_NUMERIC_FIELDS = {"sentimentScore", "confidence", "price", "priceChange", "volume"}


@dataclass(eq=False)
class _Client:
    number: int
    ws: ServerConnection
    token: str
    limits: dict[str, SlidingWindow]
    tickers: set[str] = field(default_factory=set)  # empty = no filter: every article

    def wants(self, tickers: set[str]) -> bool:
        return not self.tickers or bool(self.tickers & tickers)


def _reason(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    assert len(text.encode()) <= 123, "close reasons are capped at 123 bytes by RFC 6455"
    return text


class StockNewsSimulator(WebSocketSimulator):
    """Knobs: refuse_connections (HTTP 503), silent (frozen: sends nothing, keeps sockets),
    close_after_connect (close code after `connected`), emit_news(), flood(), close_all(), expire().
    Observability: connection_attempts, open_connections, received, wait_for()."""

    def __init__(
        self, tokens: Iterable[str] = ("demo-token",), *, host: str = "127.0.0.1", port: int = 0,
        news_interval: float | None = 2.0, expires_at: datetime | None = None,
        expired_tokens: Iterable[str] = (), control_token: str | None = None,
        answer_pings: bool = False, seed: int | None = None,
        clock: Callable[[], float] = time.monotonic, rate_window: float = 60.0,
        max_connection_attempts: int = 10, max_connections_per_token: int = 5,
        max_pings: int = 20, max_subscribes: int = 10, max_messages: int = 30,
    ) -> None:
        super().__init__(host=host, control_token=control_token)
        self.tokens = set(tokens)
        self.expired_tokens = set(expired_tokens)
        self._requested_port = port
        self.news_interval = news_interval
        self.expires_at = expires_at or datetime.now(timezone.utc) + timedelta(days=30)
        # The doc lists `ping` as a keep-alive but documents no reply, so by default we send
        # none; clients must not rely on a pong. Flip this to test clients that do expect one.
        self.answer_pings = answer_pings
        self.rate_window, self._clock = rate_window, clock
        self.max_connection_attempts = max_connection_attempts
        self.max_connections_per_token = max_connections_per_token
        self.max_pings, self.max_subscribes, self.max_messages = max_pings, max_subscribes, max_messages
        # Failure-injection knobs.
        self.refuse_connections = False
        self.silent = False
        self.close_after_connect: int | None = None
        self.flooding: Flood | None = None  # the latest flood()
        # Observability.
        self.connection_attempts = 0
        self.received: list[tuple[int, Any]] = []
        self._rng = random.Random(seed)
        self._seq = itertools.count(1)
        self._numbers = itertools.count(1)
        self._clients: set[_Client] = set()
        self._ip_windows: dict[str, SlidingWindow] = {}
        self._by_token: dict[str, set[ServerConnection]] = {}
        self._companies = dict(newsgen.UNIVERSE)
        self._quotes: dict[str, newsgen.Quote] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # The real service documents client-driven pings only (hence no pings from us either).
        self._server = await self._serve(self._requested_port)
        if self.news_interval:
            self._spawn(self._news_loop())

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._server:
            self._server.close()  # closes open connections with 1001 (going away)
            await self._server.wait_closed()

    def url(self, token: str) -> str:
        return f"ws://{self._public_host}:{self.port}/ws?token={quote(token)}"

    @property
    def open_connections(self) -> int:
        """Authenticated connections currently registered for news."""
        return len(self._clients)

    # -- knobs -------------------------------------------------------------------------------

    def emit_news(self, ticker: str, **overrides: Any) -> dict[str, Any]:
        """Generate one article for `ticker` now and broadcast it; overrides replace `data` fields.

        `sentimentScore` and `category` overrides feed the generator, so the headline, label
        and key factors stay consistent with them.
        """
        message = self._article(ticker, overrides)
        if not self.silent:
            broadcast(self._readers(message), json.dumps(message))
        return message

    def flood(self, count: int, *, tickers: Iterable[str] = (), rate: float | None = None,
              stamp: bool = False) -> dict[str, Any]:
        """Generate `count` articles (round robin over `tickers`, default the universe), then send
        them in the background as fast as each connection takes them, or at `rate` per second
        (feeds/simulators/flood.py). With `stamp`, each article's slug is `bench:<n>:<ns>`, the
        CLOCK_MONOTONIC time it was written at, for latency benchmarks. Returns what will be sent:
        articles, the news items they make (one per ticker named) and quotes (one per article)."""
        count, rate = flood_count(count), flood_rate(rate)
        pool = sorted({t.strip().upper() for t in tickers if t.strip()}) or sorted(newsgen.UNIVERSE)
        messages = [self._article(pool[i % len(pool)], {}) for i in range(count)]
        frames = [(self._readers(m), self._stamped(m, i) if stamp else json.dumps(m)) for i, m in enumerate(messages)]
        self.flooding = Flood(count, rate)
        self._spawn(send_flood(self.flooding, frames, self._notify))
        return {"frames": count, "articles": count, "quotes": count,
                "news": sum(len({m["data"]["ticker"], *m["data"]["stockTickers"]}) for m in messages)}

    @staticmethod
    def _stamped(message: dict[str, Any], number: int) -> Callable[[], str]:
        def text() -> str:
            message["data"]["articleSlug"] = f"bench:{number}:{stamp_ns()}"
            return json.dumps(message)
        return text

    def _article(self, ticker: str, overrides: dict[str, Any]) -> dict[str, Any]:
        ticker = ticker.upper()
        company = self._companies.get(ticker) or self._companies.setdefault(
            ticker, newsgen.make_company(self._rng, ticker))
        score = int(overrides.pop("sentimentScore", newsgen.random_score(self._rng)))
        category = str(overrides.pop("category", newsgen.random_category(self._rng)))
        prev = self._quotes.get(ticker) or newsgen.initial_quote(self._rng, company)
        quote_ = self._quotes[ticker] = newsgen.next_quote(self._rng, company, prev, score)
        now = datetime.now(timezone.utc)
        data = newsgen.generate_article(
            self._rng, company, quote_, now=now, seq=next(self._seq),
            related=newsgen.pick_related(self._rng, company, category), score=score, category=category)
        data.update(overrides)
        return newsgen.news_message(data, now)

    def _readers(self, message: dict[str, Any]) -> list[ServerConnection]:
        tickers = set(message["data"]["stockTickers"]) | {message["data"]["ticker"]}
        return [c.ws for c in self._clients if c.wants(tickers)]

    async def close_all(self, code: int, reason: str = "") -> int:
        """Close every open WebSocket (authenticated or not) with `code`; returns how many."""
        assert self._server is not None
        return await close_connections(self._all_ws(), code, reason)

    async def expire(self, token: str) -> None:
        """Mark `token`'s subscription expired and close its connections the documented way."""
        self.expired_tokens.add(token)
        victims = [c.ws for c in self._clients if c.token == token]
        await close_connections(victims, POLICY_VIOLATION, self._expired_reason())

    # -- handshake: connection-level limits (/control/... is answered by WebSocketSimulator) --

    async def _handshake(self, connection: ServerConnection, url: SplitResult) -> Response | None:
        if url.path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        self.connection_attempts += 1
        self._notify()
        if self.refuse_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        ip = str(connection.remote_address[0])
        if ip not in self._ip_windows:
            self._ip_windows[ip] = SlidingWindow(self.max_connection_attempts, self.rate_window)
        if not self._ip_windows[ip].try_record(self._clock()):
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "Too many connection attempts\n")
        token = query_params(url.query).get("token", "")
        if self._auth_error(token) is None:
            # Reserve the slot now, not in the handler: the handler starts only after the
            # 101 is sent, and a client connecting in that gap would slip past the limit.
            live = {ws for ws in self._by_token.get(token, set()) if ws.state is not State.CLOSED}
            if len(live) >= self.max_connections_per_token:
                return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "Too many concurrent connections\n")
            self._by_token[token] = live | {connection}
        return None  # bad tokens are accepted, then closed with 1008 as documented

    # -- /control/<action>: see SimulatorBase ------------------------------------------------

    def _control_emit(self, query: dict[str, str]) -> dict[str, Any]:
        ticker = query.pop("ticker")
        # Numeric `data` fields must stay numbers in the emitted JSON; prices stay floats.
        return self.emit_news(ticker, **coerce_fields(query, _NUMERIC_FIELDS, floats={"price"}))

    async def _control_close(self, query: dict[str, str]) -> dict[str, Any]:
        return {"closed": await self.close_all(int(query.get("code", "1000")), query.get("reason", ""))}

    def _control_flood(self, query: dict[str, str]) -> dict[str, Any]:
        return self.flood(query["count"], tickers=query.get("tickers", "").split(","), rate=query.get("rate"),
                          stamp=flag(query.get("stamp", "")))

    def _control_refuse(self, query: dict[str, str]) -> None:
        self.refuse_connections = switch(query)

    def _control_silent(self, query: dict[str, str]) -> None:
        self.silent = switch(query)

    def _control_close_after_connect(self, query: dict[str, str]) -> None:
        self.close_after_connect = optional_int(query, "code")

    def _stats(self) -> dict[str, Any]:
        return {"connectionAttempts": self.connection_attempts, "openConnections": self.open_connections,
                "received": len(self.received), "refuseConnections": self.refuse_connections,
                "silent": self.silent, "closeAfterConnect": self.close_after_connect,
                "flood": self.flooding.as_dict() if self.flooding else None}

    # -- connection handler ------------------------------------------------------------------

    def _auth_error(self, token: str) -> str | None:
        if token not in self.tokens:
            message = "Invalid or missing authentication token" if token else "Missing authentication token"
            return _reason({"error": "Invalid token", "message": message})
        if token in self.expired_tokens or self.expires_at <= datetime.now(timezone.utc):
            return self._expired_reason()
        return None

    def _expired_reason(self) -> str:
        return _reason({"error": "Subscription expired", "message": "Your subscription has expired",
                        "expiresAt": newsgen.iso_ms(self.expires_at)})

    async def _handle(self, ws: ServerConnection) -> None:
        number = next(self._numbers)
        token = query_params(urlsplit(ws.request.path).query).get("token", "")
        error = self._auth_error(token)
        if error is not None:
            await ws.close(POLICY_VIOLATION, error)
            return
        client = _Client(number, ws, token, {
            "total": SlidingWindow(self.max_messages, self.rate_window),
            "ping": SlidingWindow(self.max_pings, self.rate_window),
            "subscribe": SlidingWindow(self.max_subscribes, self.rate_window),
        })
        self._clients.add(client)
        self._notify()
        # The real service drops the socket when the subscription runs out mid-connection.
        delay = (self.expires_at - datetime.now(timezone.utc)).total_seconds()
        expiry = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(ws.close(POLICY_VIOLATION, self._expired_reason())))
        try:
            await self._send(ws, {"type": "connected", "message": "WebSocket connection established",
                                  "subscription": {"expiresAt": newsgen.iso_ms(self.expires_at),
                                                   "isActive": True}})
            if self.close_after_connect is not None:
                await ws.close(self.close_after_connect)
                return
            async for raw in ws:
                await self._on_message(client, raw)
                if ws.state is not State.OPEN:
                    break  # we closed it (rate limit): ignore whatever was still buffered
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self._clients.discard(client)
            self._by_token.get(token, set()).discard(ws)
            self._notify()

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        _, message, _ = self._record(client.number, raw)
        if self.silent:
            return  # frozen: reads, but neither replies nor enforces anything
        kind = message.get("type") if isinstance(message, dict) else None
        exceeded = self._rate_limited(client, kind)
        if exceeded:
            await self._send(client.ws, {"type": "error", "error": "Rate limit exceeded",
                                         "message": f"Too many {exceeded}. Please slow down."})
            await client.ws.close(POLICY_VIOLATION, _reason({"error": "Rate limit exceeded"}))
        elif kind == "ping":
            if self.answer_pings:
                await self._send(client.ws, {"type": "pong"})
        elif kind == "subscribe" and _valid_tickers(message.get("tickers")):
            # Replaces the set (no reply: the doc documents none). An empty list goes back to
            # "everything", as before any subscribe, rather than muting the connection.
            client.tickers = {t.strip().upper() for t in message["tickers"] if t.strip()}
        else:
            detail = ("Expected a JSON object" if not isinstance(message, dict)
                      else "tickers must be a list of strings" if kind == "subscribe"
                      else f"Unsupported message type: {kind!r}")
            await self._send(client.ws, {"type": "error", "error": "Invalid message", "message": detail})

    def _rate_limited(self, client: _Client, kind: str | None) -> str | None:
        if not client.limits["total"].try_record(self._clock()):
            return "messages"
        if kind in ("ping", "subscribe") and not client.limits[kind].try_record(self._clock()):
            return f"{kind} messages"
        return None

    async def _send(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        if not self.silent:
            await ws.send(json.dumps(message))

    # -- automatic news ----------------------------------------------------------------------

    async def _news_loop(self) -> None:
        while self.news_interval:  # can be set to None at runtime to stop automatic news
            await asyncio.sleep(self.news_interval)
            self._news_tick()

    def _news_tick(self) -> None:
        """Give every connection at least one article per tick, sharing articles where possible."""
        if self.silent:
            return
        pending = list(self._clients)
        self._rng.shuffle(pending)
        while pending:
            pool = sorted(pending[0].tickers) or sorted(newsgen.UNIVERSE)
            data = self.emit_news(self._rng.choice(pool))["data"]
            covered = set(data["stockTickers"])
            pending = [c for c in pending if not c.wants(covered)]


def _valid_tickers(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) for t in value)


def build_from_options(options: dict[str, Any]) -> StockNewsSimulator:
    """Build from `manage.py simulate stocknews` options (see that command)."""
    interval = options.get("news_interval")
    return StockNewsSimulator(
        options.get("token") or ["demo-token"],
        host=options.get("host", "127.0.0.1"),
        port=options.get("port", 0),
        news_interval=interval if interval and interval > 0 else None,  # 0 disables automatic news
        control_token=options.get("control_token"),
        seed=options.get("seed"),
    )
