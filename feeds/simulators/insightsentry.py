"""An InsightSentry realtime WebSocket simulator (../shared/providers/insightsentry-realtime.md,
../shared/notes/providers.md A1): `/live`, a greeting, subscribe messages that carry the key and
replace the set, flat/envelope quotes, series bars on every tick, heartbeats, `ping`/`pong`, and
a dropped connection for any malformed message. Failure-injection knobs work from Python or over
HTTP (`/control/...`). Subscribe messages are checked by `insightproto`, market data comes from
the pure `marketgen`. No Django here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import SplitResult

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from feeds.outbox import SlidingWindow

from . import marketgen
from .base import coerce_fields, switch
from .flood import Flood, flood_count, flood_rate, send_flood
from .insightproto import CODE_RE, YEAR_IN_UNITS  # noqa: F401 (re-exported)
from .insightproto import POLICY_VIOLATION, UNSUPPORTED_DATA, ProtocolError, Subscription, parse_subscribe
from .marketgen import Interval, Quote
from .wsbase import WebSocketSimulator, close_connections, drop_connections

FLAT_FIELDS = ("code", "lp_time", "volume", "last_price", "change_percent", "change", "ask", "bid")
# Envelope items add these, read straight off marketgen.Quote.
_QUOTE_ATTRS = ("volume", "last_price", "change_percent", "change", "ask", "bid", "ask_size", "bid_size",
                "prev_close_price", "open_price", "low_price", "high_price", "market_cap")
_NUMERIC = {*_QUOTE_ATTRS, "lp_time", "delay_seconds"}


@dataclass(eq=False)
class _Client:
    number: int
    ws: ServerConnection
    subscribes: SlidingWindow
    api_key: str | None = None
    subscriptions: list[Subscription] = field(default_factory=list)


class InsightSentrySimulator(WebSocketSimulator):
    """Knobs: silent (frozen: sends nothing, keeps sockets), emit_quote(), flood(), send_error(),
    close_all(), drop_all(), evict(), max_connections, delays, quote_shape, tick_interval.
    Observability: connection_attempts, open_connections, received, subscriptions_of(), wait_for()."""

    def __init__(
        self, api_keys: Iterable[str] = ("demo-key",), *, host: str = "127.0.0.1", port: int = 0,
        tick_interval: float | None = 0.25, heartbeat_interval: float | None = 10.0,
        quote_shape: str = "mixed", delays: dict[str, int] | None = None, max_connections: int = 2,
        control_token: str | None = None, seed: int | None = None,
        clock: Callable[[], float] = time.time, max_subscribes: int = 300, subscribe_window: float = 300.0,
    ) -> None:
        assert quote_shape in ("flat", "envelope", "mixed"), quote_shape
        super().__init__(host=host, control_token=control_token)
        self.api_keys = set(api_keys)
        self._requested_port = port
        self.tick_interval, self.heartbeat_interval = tick_interval, heartbeat_interval
        self.quote_shape = quote_shape
        self.delays = dict(delays or {})  # code -> delay_seconds (0 real-time, 900 delayed, -1 EOD)
        self.max_connections = max_connections
        self._clock = clock
        # Reported: >~300 subscribe messages per 5 minutes are ignored while the feed goes on.
        self.max_subscribes, self.subscribe_window = max_subscribes, subscribe_window
        self.silent = False
        self.flooding: Flood | None = None  # the latest flood()
        self.connection_attempts = 0
        self.received: list[tuple[int, Any]] = []
        self._market = marketgen.Market(random.Random(seed), default_dt=tick_interval or 0.25)
        self._bars: dict[tuple[str, Interval], marketgen.BarAggregator] = {}
        self._rounds = itertools.count()  # alternates shapes when quote_shape == "mixed"
        self._numbers = itertools.count(1)
        self._clients: dict[int, _Client] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # Clients keep the link alive with text `ping` (hence no protocol-level pings from us).
        self._server = await self._serve(self._requested_port)
        self._spawn(self._tick_loop())
        self._spawn(self._heartbeat_loop())

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._server:
            self._server.close()  # closes open connections with 1001 (going away)
            await self._server.wait_closed()

    def url(self) -> str:
        return f"ws://{self._public_host}:{self.port}/live"

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    def subscriptions_of(self, connection_number: int) -> list[dict[str, Any]]:
        """The connection's current set (older spelling, defaults filled in); [] once closed."""
        client = self._clients.get(connection_number)
        return [s.as_dict() for s in client.subscriptions] if client else []

    # -- knobs -------------------------------------------------------------------------------

    def emit_quote(self, code: str, price: float, **fields: Any) -> dict[str, Any]:
        """Trade `code` at `price` now: send the quote update (fields override its values) to
        the code's quote subscribers, fold it into the bars and send the changed series."""
        tick = self._market.tick(code, self._clock(), price=float(price))
        return self._dispatch([tick], fields)

    def flood(self, count: int, *, kind: str = "both", rate: float | None = None) -> dict[str, Any]:
        """Generate `count` ticks, round robin over the subscribed codes, then send them in the
        background as fast as each connection takes them, or at `rate` ticks per second
        (feeds/simulators/flood.py). Each tick is a quote update (one item, in the current quote
        shape) and/or (`kind`: "quote", "series", "both") a series update per subscribed interval.
        Returns what will be sent: frames, quotes and bars."""
        count, rate = flood_count(count), flood_rate(rate)
        if kind not in ("quote", "series", "both"):
            raise ValueError(f"kind must be quote, series or both, not {kind!r}")
        codes = sorted({s.code for c in self._clients.values() for s in c.subscriptions})
        if not codes:
            raise ValueError("nothing is subscribed: nothing to flood")
        frames: list[tuple[list[ServerConnection], str]] = []
        quotes = bars = 0
        for i in range(count):
            tick = self._market.tick(codes[i % len(codes)], self._clock())
            if kind != "series":
                item = self._quote_item(tick)
                flat = self.quote_shape == "flat" or (self.quote_shape == "mixed" and next(self._rounds) % 2 == 0)
                message = {k: item.get(k) for k in FLAT_FIELDS} if flat else _envelope(int(tick.time * 1000), [item])
                readers = self._subscribers(tick.code, "quote")
                frames.append((readers, json.dumps(message)))
                quotes += len(readers) > 0
            if kind != "quote":
                for readers, message in self._series_updates(tick):
                    frames.append((readers, json.dumps(message)))
                    bars += 1
        self.flooding = Flood(len(frames), rate)
        self._spawn(send_flood(self.flooding, frames, self._notify))
        return {"frames": len(frames), "ticks": count, "quotes": quotes, "bars": bars}

    def send_error(self, error: str, **fields: Any) -> int:
        """Send `{"error": error, **fields}` to every open connection; returns how many."""
        return self._broadcast(self._all_ws(), {"error": error, **fields})

    async def close_all(self, code: int = 1000, reason: str = "") -> int:
        return await close_connections(self._all_ws(), code, reason)

    def drop_all(self) -> int:
        """Abort every TCP connection without a close frame (a crashed server or dead network)."""
        return drop_connections(self._all_ws())

    async def evict(self, api_key: str) -> int:
        victims = [c.ws for c in self._clients.values() if c.api_key == api_key]
        self._broadcast(victims, {"error": "connection_evicted"})
        return await close_connections(victims, POLICY_VIOLATION, "connection_evicted")

    # -- HTTP: path check (/control/... is answered by WebSocketSimulator) -------------------

    async def _handshake(self, connection: ServerConnection, url: SplitResult) -> Response | None:
        if url.path != "/live":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        self.connection_attempts += 1
        self._notify()
        return None  # no auth at the handshake: the key comes with each subscribe message

    # -- /control/<action>: see SimulatorBase ------------------------------------------------

    def _control_emit_quote(self, query: dict[str, str]) -> dict[str, Any]:
        code, price = query.pop("code"), float(query.pop("price"))
        # Numeric quote fields must stay numbers in the emitted JSON.
        return self.emit_quote(code, price, **coerce_fields(query, _NUMERIC))

    def _control_error(self, query: dict[str, str]) -> dict[str, Any]:
        return {"sent": self.send_error(query.pop("error"), **query)}

    async def _control_close(self, query: dict[str, str]) -> dict[str, Any]:
        return {"closed": await self.close_all(int(query.get("code", "1000")), query.get("reason", ""))}

    def _control_drop(self, query: dict[str, str]) -> dict[str, Any]:
        return {"dropped": self.drop_all()}

    async def _control_evict(self, query: dict[str, str]) -> dict[str, Any]:
        return {"evicted": await self.evict(query["api_key"])}

    def _control_silent(self, query: dict[str, str]) -> None:
        self.silent = switch(query)

    def _control_flood(self, query: dict[str, str]) -> dict[str, Any]:
        return self.flood(query["count"], kind=query.get("kind", "both"), rate=query.get("rate"))

    def _control_ticks(self, query: dict[str, str]) -> None:
        """`?interval=` seconds between automatic tick rounds; empty or 0 pauses them."""
        interval = float(query.get("interval") or 0)
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.tick_interval = interval or None

    def _stats(self) -> dict[str, Any]:
        return {"connectionAttempts": self.connection_attempts, "openConnections": self.open_connections,
                "received": len(self.received), "silent": self.silent, "tickInterval": self.tick_interval,
                "subscriptions": {n: self.subscriptions_of(n) for n in self._clients},
                "flood": self.flooding.as_dict() if self.flooding else None}

    # -- connection handler ------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(next(self._numbers), ws, SlidingWindow(self.max_subscribes, self.subscribe_window))
        self._clients[client.number] = client
        self._notify()
        try:
            self._broadcast([ws], {"message": "Connecting..."})
            async for raw in ws:
                await self._on_message(client, raw)
                if ws.state is not State.OPEN:
                    break  # we dropped it: ignore whatever was still buffered
        except ConnectionClosed:
            pass
        finally:
            del self._clients[client.number]
            self._notify()

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        text, message, is_json = self._record(client.number, raw)
        if self.silent:
            return  # frozen: reads, but neither replies nor enforces anything
        if text.strip() == "ping" and not isinstance(raw, bytes):
            await client.ws.send("pong")  # bare text, not JSON, as documented
            return
        if not client.subscribes.try_record(self._clock()):
            return  # over the subscribe budget: ignored, the feed goes on
        try:
            if isinstance(raw, bytes):
                # 1003 is for a data type the endpoint cannot take (binary on a text protocol).
                raise ProtocolError("invalid_message", "Binary frames are not supported", UNSUPPORTED_DATA)
            if not is_json:
                raise ProtocolError("invalid_message", "Message is not valid JSON")
            key, subs = parse_subscribe(message, self.api_keys)
            others = sum(1 for c in self._clients.values() if c.api_key == key and c is not client)
            if key != client.api_key and others >= self.max_connections:
                raise ProtocolError("max_connections_exceeded", "Too many connections for this API key")
        except ProtocolError as exc:
            # Malformed JSON is not a frame-type problem, so everything else closes with 1008
            # (policy violation), RFC 6455's code when no more specific one fits.
            self._broadcast([client.ws], {"error": exc.error, "message": exc.message})
            await client.ws.close(exc.close_code, exc.error)
            return
        client.api_key, client.subscriptions = key, subs  # replaces the whole set
        self._notify()

    # -- market data -------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval or 0.25)
            if self.tick_interval and not self.silent:  # can be set to None/0 at runtime to pause
                now = self._clock()
                codes = sorted({s.code for c in self._clients.values() for s in c.subscriptions})
                if codes:
                    self._dispatch([self._market.tick(code, now) for code in codes], {})

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval or 1.0)
            if self.heartbeat_interval:
                self._broadcast(self._all_ws(), {"server_time": int(self._clock() * 1000)})

    def _dispatch(self, ticks: list[Quote], overrides: dict[str, Any]) -> dict[str, Any]:
        """Send one round of ticks as quotes and series updates; return the last quote message."""
        round_ = next(self._rounds)
        shape = self.quote_shape if self.quote_shape != "mixed" else ("flat", "envelope")[round_ % 2]
        items = {t.code: {**self._quote_item(t), **overrides} for t in ticks}
        now_ms = int(self._clock() * 1000)
        if shape == "flat":
            keys = (*FLAT_FIELDS, *overrides)  # overrides may add fields, e.g. to test unknown keys
            flats = {code: {k: item.get(k) for k in keys} for code, item in items.items()}
            for code, flat in flats.items():
                self._broadcast(self._subscribers(code, "quote"), flat)
            result = flats[ticks[-1].code]
        else:
            # One envelope per connection, holding every quote it subscribes to in this round.
            for client in self._clients.values():
                mine = [items[s.code] for s in client.subscriptions if s.type == "quote" and s.code in items]
                if mine:
                    self._broadcast([client.ws], _envelope(now_ms, mine))
            result = _envelope(now_ms, [items[ticks[-1].code]])
        for tick in ticks:
            self._send_series(tick)
        return result

    def _quote_item(self, t: Quote) -> dict[str, Any]:
        return {"code": t.code, "status": "OPEN", "lp_time": int(t.time),
                **{k: getattr(t, k) for k in _QUOTE_ATTRS},
                "currency_code": "USD", "delay_seconds": self.delays.get(t.code, 0)}

    def _send_series(self, tick: Quote) -> None:
        """Fold the tick into every subscribed interval of its code; push bars that changed."""
        for readers, message in self._series_updates(tick):
            self._broadcast(readers, message)

    def _series_updates(self, tick: Quote) -> list[tuple[list[ServerConnection], dict[str, Any]]]:
        """Fold the tick into every subscribed interval of its code: (subscribers, series message)
        for each bar that changed."""
        intervals = {s.interval for c in self._clients.values() for s in c.subscriptions
                     if s.code == tick.code and s.interval is not None}
        updates = []
        for interval in sorted(intervals, key=lambda i: (i.unit, i.length)):
            aggregator = self._bars.get((tick.code, interval))
            if aggregator is None:
                aggregator = self._bars[(tick.code, interval)] = marketgen.BarAggregator(interval)
            bar = aggregator.add(tick.time, tick.last_price, tick.size)
            if bar is not None:
                message = {"code": tick.code, "bar_end": interval.end_of(bar.time),
                           "bar_type": interval.bar_type, "series": [bar.as_dict()]}
                updates.append((self._subscribers(tick.code, "series", interval), message))
        return updates

    # -- helpers -----------------------------------------------------------------------------

    def _subscribers(self, code: str, kind: str, interval: Interval | None = None) -> list[ServerConnection]:
        wanted = Subscription(code, kind, interval)
        return [c.ws for c in self._clients.values() if wanted in c.subscriptions]

    def _broadcast(self, connections: Iterable[ServerConnection], message: dict[str, Any]) -> int:
        """Queue `message` on each open connection without awaiting; nothing while silent."""
        targets = [ws for ws in connections if ws.state is State.OPEN]
        if targets and not self.silent:
            broadcast(targets, json.dumps(message))
        return len(targets)


def _envelope(now_ms: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"last_update": now_ms, "total_items": len(items), "data": items}


def build_from_options(options: dict[str, Any]) -> InsightSentrySimulator:
    """Build from `manage.py simulate insightsentry` options (see that command)."""
    interval = options.get("news_interval")  # the command's generic rate knob: the quote tick here
    return InsightSentrySimulator(
        options.get("token") or ["demo-key"],
        host=options.get("host", "127.0.0.1"),
        port=options.get("port", 0),
        tick_interval=interval if interval and interval > 0 else 0.25,
        control_token=options.get("control_token"),
        seed=options.get("seed"),
    )
