"""A Knowsis Push API simulator: a Pusher Channels protocol 7 server on `websockets`
(../shared/providers/knowsis-push-api.md, ../shared/notes/pusher.md §3, §7). Speaks what pysher
and pusher-js expect on `/app/<key>?protocol=5..7`: double-encoded connection_established,
public and private (HMAC-SHA256) subscribes, ping/pong, `pusher:error`, 40xx closes; channel
events carry Knowsis payloads from the pure `knowsisgen`. Knobs work from Python or over HTTP
(`/control/...`, same port). Not simulated, as Knowsis needs none of it: presence channels and
client events (both refused), server pings after `activity_timeout`. No Django here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Iterable
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from . import knowsisgen
from .base import switch
from .flood import Flood, flood_count, flood_rate, send_flood
from .wsbase import WebSocketSimulator, close_connections, drop_connections

APP_NOT_FOUND = 4001
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
SERVICE_RESTART = 1012
MAX_PROTOCOL = 7
_APP_PATH = re.compile(r"/app/([^/]+)")
_CHANNEL_NAME = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,164}")  # Pusher's allowed characters and length
# What Pusher answers when an app has client events switched off (Knowsis has no use for them).
_CLIENT_EVENTS_OFF = "To send client events, you must enable this feature in the Settings page of your dashboard."


def sign(secret: str, message: str) -> str:
    """Pusher's auth signature: hex HMAC-SHA256 of `message` keyed with the app secret."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(eq=False)
class _Client:
    number: int
    ws: ServerConnection
    key: str
    socket_id: str
    channels: set[str] = field(default_factory=set)


class KnowsisSimulator(WebSocketSimulator):
    """Knobs: emit(), flood(), close_all(), send_error_event(), drop_all(), freeze()/thaw() (half-open
    link), restart() (same port), blackhole (handshakes never answered), min_protocol.
    Observability: connection_attempts, protocols, open_connections, received, socket_ids,
    subscriptions_of(), subscribed(), wait_for()."""

    def __init__(
        self, app_key: str = "demo-key", app_secret: str = "demo-secret", *, host: str = "127.0.0.1",
        port: int = 0, activity_timeout: int = 120, news_interval: float | None = 2.0,
        extra_keys: Iterable[str] = (), min_protocol: int = 5,
        control_token: str | None = None, seed: int | None = None,
    ) -> None:
        super().__init__(host=host, control_token=control_token)
        self.app_key, self.app_secret = app_key, app_secret
        self.valid_keys = {app_key, *extra_keys}  # other keys are closed with 4001
        self._port = port
        self.activity_timeout = activity_timeout
        self.news_interval = news_interval  # None/0: no automatic events (can change at runtime)
        self.min_protocol = min_protocol
        # Failure-injection knobs.
        self.blackhole = False
        self.frozen = False
        self.flooding: Flood | None = None  # the latest flood()
        # Observability.
        self.connection_attempts = 0
        self.received: list[tuple[int, Any]] = []
        self.socket_ids: dict[int, str] = {}  # every connection so far, closed ones included
        self.protocols: list[str] = []  # the `protocol` each handshake asked for, in order ("" = none)
        self._rng = random.Random(seed)
        self._id_rng = random.Random(seed)  # separate, so socket ids do not shift the content stream
        self._numbers = itertools.count(1)
        self._clients: dict[int, _Client] = {}
        self._channels: dict[str, knowsisgen.ChannelState] = {}
        self._closing = False
        self._generator: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; after stop() or restart() on the port used before, so clients can come back."""
        # Pusher clients drive keep-alive (hence no pings from us).
        # open_timeout=None: a blackholed handshake must hang until the client gives up.
        self._closing = False
        self._server = await self._serve(self._port, open_timeout=None, close_timeout=1)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._generator is None or self._generator.done():  # restart() keeps it running
            self._generator = self._spawn(self._generate_loop())

    async def stop(self) -> None:
        await self._cancel_tasks()
        await self._shutdown(1001, "")  # going away

    async def restart(self) -> None:
        """Stop listening, close every connection with 1012 and listen again on the same port."""
        await self._shutdown(SERVICE_RESTART, "service restart")
        await self.start()

    async def _shutdown(self, code: int, reason: str) -> None:
        if self._server is None:
            return
        self._closing = True  # releases handshakes held by blackhole/freeze (they get a 503)
        self.thaw()  # paused readers would make every close wait out its close_timeout
        self._server.close(code=code, reason=reason)
        await self._server.wait_closed()
        self._server = None

    @property
    def port(self) -> int:
        """The bound port; still known after stop(), since start() binds it again."""
        assert self._port, "start() the simulator first"
        return self._port

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def url(self, key: str | None = None) -> str:
        path = f"/app/{quote(key or self.app_key)}?protocol=7&client=sim&version=1"
        return f"ws://{self._public_host}:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """Connections past the key/protocol checks and not yet closed."""
        return len(self._clients)

    def subscriptions_of(self, connection_number: int) -> set[str]:
        """The connection's channels; empty once it is closed."""
        return set(getattr(self._clients.get(connection_number), "channels", ()))

    def subscribed(self, channel: str) -> int:
        """How many open connections are subscribed to `channel`."""
        return sum(1 for c in self._clients.values() if channel in c.channels)

    # -- knobs -------------------------------------------------------------------------------

    def emit(self, channel: str, event: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send `event` to the channel's subscribers now (a generated payload when `data` is None);
        returns the payload. Supplied payloads also update the channel's alert/tweet memory."""
        state = self._channel_state(channel)
        if data is None:
            payload, state = knowsisgen.generate(self._rng, state, event, datetime.now(timezone.utc))
        else:
            payload, state = dict(data), knowsisgen.observe(state, event, data)
        self._channels[channel] = state
        subscribers = [c.ws for c in self._clients.values() if channel in c.channels]
        self._send(subscribers, {"event": event, "channel": channel, "data": _dumps(payload)})
        return payload

    def flood(self, count: int, *, events: Iterable[str] = ("datapoint",), rate: float | None = None) -> dict[str, Any]:
        """Generate `count` channel events (generated payloads; `events` in turn, round robin over
        the subscribed channels), then send them in the background as fast as each connection
        takes them, or at `rate` per second (feeds/simulators/flood.py). Returns what will be
        sent: frames, and how many of each event."""
        count, rate = flood_count(count), flood_rate(rate)
        events = [e for e in events if e]
        if not events or any(e not in knowsisgen.EVENTS for e in events):
            raise ValueError(f"events must be among {', '.join(knowsisgen.EVENTS)}")
        channels = sorted({ch for c in self._clients.values() for ch in c.channels})
        if not channels:
            raise ValueError("nothing is subscribed: nothing to flood")
        now = datetime.now(timezone.utc)
        frames, counts = [], dict.fromkeys(events, 0)
        for i in range(count):
            channel, event = channels[i % len(channels)], events[i // len(channels) % len(events)]
            payload, self._channels[channel] = knowsisgen.generate(self._rng, self._channel_state(channel), event, now)
            readers = [c.ws for c in self._clients.values() if channel in c.channels]
            frames.append((readers, _dumps({"event": event, "channel": channel, "data": _dumps(payload)})))
            counts[event] += 1
        self.flooding = Flood(count, rate)
        self._spawn(send_flood(self.flooding, frames, self._notify))
        return {"frames": count, "events": counts}

    def send_error_event(self, code: int | None, message: str = "") -> int:
        """Send `pusher:error` to every connection without closing; returns how many."""
        return self._send(self._all_ws(), _error(code, message))

    async def close_all(self, code: int, reason: str = "") -> int:
        return await close_connections(self._all_ws(), code, reason)

    def drop_all(self) -> int:
        """Abort every TCP connection without a close frame (a crashed server or dead network)."""
        return drop_connections(self._all_ws())

    def freeze(self) -> None:
        """A half-open link: stop reading (so no WebSocket pongs either) and writing on every
        connection, and leave new handshakes unanswered; TCP stays up."""
        self.frozen = True
        for ws in self._all_ws():
            ws.transport.pause_reading()

    def thaw(self) -> None:
        """Undo freeze(): whatever clients sent meanwhile is read (and answered) now."""
        self.frozen = False
        for ws in self._all_ws():
            ws.transport.resume_reading()

    # -- HTTP: the handshake gate (/control/... is answered by WebSocketSimulator) -----------

    async def _handshake(self, connection: ServerConnection, url: SplitResult) -> Response | None:
        if not _APP_PATH.fullmatch(url.path):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        self.connection_attempts += 1
        self.protocols.append(parse_qs(url.query).get("protocol", [""])[-1][:20])
        self._notify()
        # The kernel accepted the TCP connection; a frozen or blackholed server never answers.
        await self.wait_for(lambda: self._closing or not (self.blackhole or self.frozen), timeout=None)
        return None  # bad keys and protocols are accepted, then closed with a 40xx code

    # -- /control/<action>: see SimulatorBase ------------------------------------------------

    def _control_emit(self, query: dict[str, str]) -> dict[str, Any]:
        data = json.loads(query["data"]) if "data" in query else None
        if data is not None and not isinstance(data, dict):
            raise ValueError("data must be a JSON object")
        return self.emit(query["channel"], query["event"], data)

    async def _control_close(self, query: dict[str, str]) -> dict[str, Any]:
        return {"closed": await self.close_all(int(query.get("code", "1000")), query.get("reason", ""))}

    def _control_error(self, query: dict[str, str]) -> dict[str, Any]:
        code = int(query["code"]) if query.get("code", "null") != "null" else None  # null: as a failed auth
        return {"sent": self.send_error_event(code, query.get("message", ""))}

    def _control_flood(self, query: dict[str, str]) -> dict[str, Any]:
        return self.flood(query["count"], events=query.get("events", "datapoint").split(","), rate=query.get("rate"))

    def _control_drop(self, query: dict[str, str]) -> dict[str, Any]:
        return {"dropped": self.drop_all()}

    def _control_freeze(self, query: dict[str, str]) -> None:
        self.freeze() if switch(query) else self.thaw()

    def _control_blackhole(self, query: dict[str, str]) -> None:
        self.blackhole = switch(query)

    def _control_restart(self, query: dict[str, str]) -> None:
        self._spawn(self.restart())  # after this response: it closes the server the request came in on

    def _stats(self) -> dict[str, Any]:
        return {"connectionAttempts": self.connection_attempts, "openConnections": self.open_connections,
                "received": len(self.received), "frozen": self.frozen, "blackhole": self.blackhole,
                "protocols": self.protocols[-20:], "flood": self.flooding.as_dict() if self.flooding else None,
                "subscriptions": {n: sorted(c.channels) for n, c in self._clients.items()}}

    # -- connection handler ------------------------------------------------------------------

    def _refusal(self, path: str) -> tuple[str, tuple[int, str] | None]:
        """(app key, None) or (app key, close code and reason) per protocol §3's 40xx table."""
        url = urlsplit(path)
        match = _APP_PATH.fullmatch(url.path)
        key = unquote(match.group(1)) if match else ""
        if key not in self.valid_keys:
            # Close reasons are capped at 123 bytes (RFC 6455), hence the truncated key.
            reason = f"App key {key[:40]} not in this cluster. Did you forget to specify the cluster?"
            return key, (APP_NOT_FOUND, reason)
        protocol = parse_qs(url.query).get("protocol", [""])[-1]
        if not protocol:
            return key, (NO_PROTOCOL, "No protocol version supplied")
        if not protocol.isdigit() or not self.min_protocol <= int(protocol) <= MAX_PROTOCOL:
            return key, (UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol[:20]}")
        return key, None

    def _new_socket_id(self, number: int) -> str:
        """Digits.digits, as the `pusher` library insists on; the connection number makes it unique."""
        return f"{self._id_rng.randrange(10**5, 10**6)}.{self._id_rng.randrange(10**5, 10**6)}{number}"

    async def _handle(self, ws: ServerConnection) -> None:
        number = next(self._numbers)
        key, refusal = self._refusal(ws.request.path)
        if refusal is not None:
            await ws.close(*refusal)
            return
        client = _Client(number, ws, key, self._new_socket_id(number))
        self.socket_ids[number] = client.socket_id
        self._clients[number] = client
        if self.frozen:  # froze between the handshake gate and here
            ws.transport.pause_reading()
        self._notify()
        try:
            self._send([ws], {"event": "pusher:connection_established", "data": _dumps(
                {"socket_id": client.socket_id, "activity_timeout": self.activity_timeout})})
            async for raw in ws:
                self._on_message(client, raw)
        except ConnectionClosed:
            pass
        finally:
            del self._clients[number]
            self._notify()

    def _on_message(self, client: _Client, raw: str | bytes) -> None:
        _, message, _ = self._record(client.number, raw)
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            self._send([client.ws], _error(None, "Invalid message: expected a JSON object with an event"))
            return
        event, data = message["event"], message.get("data")
        if event == "pusher:ping":
            self._send([client.ws], {"event": "pusher:pong", "data": "{}"})
        elif event == "pusher:subscribe":
            self._subscribe(client, data)
        elif event == "pusher:unsubscribe":
            client.channels.discard(data.get("channel") if isinstance(data, dict) else None)
            self._notify()
        elif event.startswith("client-"):
            self._send([client.ws], _error(None, _CLIENT_EVENTS_OFF))
        # Anything else (pusher:pong, unknown pusher: events) is ignored, as Pusher does.

    def _subscribe(self, client: _Client, data: Any) -> None:
        channel = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(channel, str) or not _CHANNEL_NAME.fullmatch(channel):
            self._send([client.ws], _error(None, f"Invalid channel name {str(channel)[:80]!r}"))
            return
        if channel.startswith("presence-"):
            self._send([client.ws], _error(None, "Presence channels are not supported by this simulator"))
            return
        if channel.startswith("private-"):
            signed = f"{client.socket_id}:{channel}"
            expected = f"{client.key}:{sign(self.app_secret, signed)}"
            auth = data.get("auth")
            # Constant time: a timing leak would let a client guess the signature byte by byte.
            given_bytes = auth.encode("utf-8", "replace") if isinstance(auth, str) else b""
            if not hmac.compare_digest(given_bytes, expected.encode()):
                given = auth.rpartition(":")[2] if isinstance(auth, str) else auth
                self._send([client.ws], _error(
                    None, f"Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {given}"))
                return
        client.channels.add(channel)
        self._notify()
        self._send([client.ws], {"event": "pusher_internal:subscription_succeeded", "channel": channel,
                                 "data": "{}"})

    # -- automatic events --------------------------------------------------------------------

    async def _generate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.news_interval or 0.25)
            if self.news_interval and not self.frozen:
                channels = sorted({ch for c in self._clients.values() for ch in c.channels})
                for channel in channels:  # one event per subscribed channel, shared by its subscribers
                    self.emit(channel, knowsisgen.pick_event(self._rng, self._channel_state(channel)))

    def _channel_state(self, channel: str) -> knowsisgen.ChannelState:
        if channel not in self._channels:
            self._channels[channel] = knowsisgen.new_channel(self._rng, channel, datetime.now(timezone.utc))
        return self._channels[channel]

    # -- helpers -----------------------------------------------------------------------------

    def _send(self, connections: Iterable[ServerConnection], message: dict[str, Any]) -> int:
        """Queue `message` on each open connection without awaiting; nothing while frozen."""
        targets = [ws for ws in connections if ws.state is State.OPEN]
        if targets and not self.frozen:
            broadcast(targets, json.dumps(message))
        return len(targets) if not self.frozen else 0


def _error(code: int | None, message: str) -> dict[str, Any]:
    # The one event whose data is an object, not a JSON string (protocol §3).
    return {"event": "pusher:error", "data": {"code": code, "message": message}}


def build_from_options(options: dict[str, Any]) -> KnowsisSimulator:
    """Build from `manage.py simulate knowsis` options; the token is "key:secret"."""
    key, _, secret = (options.get("token") or ["demo-key:demo-secret"])[0].partition(":")
    interval = options.get("news_interval")
    return KnowsisSimulator(
        key or "demo-key", secret or "demo-secret",
        host=options.get("host", "127.0.0.1"),
        port=options.get("port", 0),
        # As for the other simulators, `--news-interval 0` turns automatic events off (tests drive them).
        news_interval=None if interval == 0 else (interval if interval and interval > 0 else 2.0),
        control_token=options.get("control_token"),
        seed=options.get("seed"),
    )
