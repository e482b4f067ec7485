"""Pusher Channels through pysher, with the failure handling an unattended worker needs.

pysher (our chosen client) handles the happy path; its failure handling has measured flaws
(../shared/notes/pusher.md, sections 5 and 8). We wrap it instead of patching it:

- One `pysher.Pusher` per connection attempt, never reused. pysher's own reconnect decisions
  (pong timeout, no-data timeout, `pusher:error` 41xx/42xx) are routed to us by overriding
  `reconnect` on the instance, so *our* policy decides when to connect again: no fixed 10 s
  loop, no `reconnect_interval` stuck at 0 after a 4200.
- Close codes, which pysher ignores, are read from websocket-client's close callback and
  classified by `classify` (4000-4099 stop for good, 4100-4199 back off >= 1 s every time,
  4200-4299 reconnect at once, once in a row); the shared loop (reconnect.py) does the rest.
- Liveness: WebSocket pings through pysher's socket options, our own `pusher:ping` on quiet
  links, and a watchdog on the time since the last frame: a frozen server is given up quickly.
- A handshake that never completes is given up after `handshake_timeout`.
- Callbacks run on pysher's thread: they only hand `(channel, event, data)` to the asyncio loop
  and never raise into pysher (an exception there switches its liveness checks off).
- Subscriptions are sent afresh, with a fresh private-channel signature, on every
  `connection_established` (`auto_sub` would resend private channels without auth).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pysher
import websocket

from feeds.backoff import Backoff
from feeds.logthrottle import throttle_for
from feeds.status import StatusSink

from .reconnect import Classifier, Decision, LinkEnded, ReconnectLoop, Retry, Stop

__all__ = ["PusherOptions", "PusherSupervisor", "classify"]

log = logging.getLogger(__name__)

OnEvent = Callable[[str, str, object], Awaitable[None]]


@dataclass(frozen=True)
class PusherOptions:
    handshake_timeout: float = 10.0  # TCP accepted but no connection_established: give up
    ws_ping_interval: float = 10.0  # WebSocket-level pings (websocket-client, via socket_kwargs)
    ws_ping_timeout: float = 5.0
    activity_ping: float = 15.0  # our pusher:ping after this long without a frame
    stale_after: float = 25.0  # no frame at all for this long: the link is dead, rebuild it
    watchdog_tick: float = 1.0


def classify(ended: LinkEnded) -> Decision:
    """Pusher protocol 7 close-code ranges (pusher.com/docs/pusher_protocol).

    4000-4099: do not reconnect unchanged: stop, `auth_failed` for 4001 (app key) and 4009
    (unauthorised), `refused` otherwise. 4100-4199: back off, at least 1 s *every* time.
    4200-4299: reconnect at once (once in a row; a repeat goes through the policy).
    Anything else (1xxx, a dropped link, a liveness timeout): the policy, at least 1 s on the
    first retry after a healthy period."""
    code = ended.close_code
    if code is not None and 4000 <= code <= 4099:
        return Stop("auth_failed" if code in (4001, 4009) else "refused")
    if code is not None and 4100 <= code <= 4199:
        return Retry(floor=1.0)
    if code is not None and 4200 <= code <= 4299:
        return Retry(now=True)
    return Retry(first_floor=1.0)


class _Pysher(pysher.Pusher):
    # pysher 1.0.8 asks for protocol 6 in its URL; Knowsis, the README and our simulator speak 7,
    # which only renamed things pysher already handles (../shared/notes/pusher.md §3, §6).
    protocol = 7


class _Session:
    """One pysher client and the one connection it makes. Its thread reports to `report`."""

    def __init__(self, *, key: str, secret: str, host: str, port: int, secure: bool, options: PusherOptions,
                 report: Callable[..., None]) -> None:
        self.report = report
        self.last_frame = self._timers_restarted = time.monotonic()
        self.established = False
        self.pusher = _Pysher(key, secure=secure, port=port, custom_host=host, secret=secret,
                              auto_sub=False, reconnect_interval=0, log_level=logging.WARNING, daemon=True)
        conn = self.pusher.connection
        # skip_utf8_validation: websocket-client checks UTF-8 in a per-byte Python loop unless the
        # optional wsaccel is installed (≈ 80 µs for a 430-byte frame, half a worker's time under a
        # flood); `_on_message` decodes strictly in C instead. A frame that is not UTF-8 is then
        # counted and skipped like one that is not JSON, and the link stays up: RFC 6455 would fail
        # the connection, but for a feed that cannot resume that loses every event until the
        # resubscription, for one bad frame.
        conn.socket_kwargs.update(ping_interval=options.ws_ping_interval, ping_timeout=options.ws_ping_timeout,
                                  skip_utf8_validation=True)
        # Instance-level overrides (pysher's code untouched): its reconnect decisions end this
        # session instead, and close codes and errors reach us.
        conn.reconnect = self._reconnect_requested
        conn.event_callbacks["pusher:error"] = [(self._guard(self._pusher_error), (), {})]
        self._original = {name: getattr(conn, name) for name in ("_on_close", "_on_error", "_on_message")}
        conn._on_close = self._guard(self._on_close)
        conn._on_error = self._guard(self._on_error)
        conn._on_message = self._guard(self._on_message)
        conn.bind("pusher:connection_established", self._guard(self._established))

    def _guard(self, func: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args, **kwargs) -> None:
            try:
                func(*args, **kwargs)
            except Exception:  # never let anything raise into pysher's thread
                log.exception("pusher callback failed")
        return guarded

    # -- on pysher's thread ------------------------------------------------------------------
    def _on_message(self, *args) -> None:
        self.last_frame = now = time.monotonic()
        message = args[-1]
        try:
            if isinstance(message, bytes):  # a text frame, undecoded (skip_utf8_validation above)
                message = message.decode("utf-8")
            params = json.loads(message)
        except (TypeError, ValueError):  # UnicodeDecodeError is a ValueError
            params = None
        if not isinstance(params, dict):  # pysher's parser would raise: keep it away from it
            self.report("bad_frame", message)
            return
        if "channel" not in params or "event" not in params:
            self._original["_on_message"](*args[:-1], message)  # connection events: pysher's own path
            return
        # A channel event, the hot path: straight to pysher's dispatch, as its `_on_message` does,
        # less what that costs per frame besides (a second parse, an eagerly formatted log line,
        # and four operations on its timer queue to push its liveness deadlines back, which it
        # measures in minutes: once a second is as good).
        conn = self.pusher.connection
        conn.event_handler(params["event"], params.get("data"), params["channel"])
        if now - self._timers_restarted >= 1.0:
            self._timers_restarted = now
            conn._start_timers()

    def _established(self, data) -> None:
        self.established = True
        self.report("established", json.loads(data).get("socket_id"))

    def _pusher_error(self, data) -> None:
        data = json.loads(data) if isinstance(data, str) else (data or {})
        code = data.get("code") if isinstance(data, dict) else None
        message = str(data.get("message", "")) if isinstance(data, dict) else str(data)
        self.report("pusher_error", code if isinstance(code, int) else None, message)

    def _reconnect_requested(self, reconnect_interval=None) -> None:
        self.report("ended", None, "pysher asked to reconnect (liveness check failed)")
        self._close_socket(wait=0)

    def _on_error(self, *args) -> None:
        self._original["_on_error"](*args)
        self.report("error", repr(args[-1]))

    def _on_close(self, *args) -> None:
        self._original["_on_close"](*args)
        code = args[1] if len(args) >= 3 else None
        reason = args[2] if len(args) >= 3 else ""
        # pysher's thread loops while needs_reconnect: clear it so the thread ends here.
        self.pusher.connection.needs_reconnect = False
        self.report("ended", code, reason if isinstance(reason, str) else "")

    # -- from the asyncio side ---------------------------------------------------------------
    def _close_socket(self, wait: float = 3.0) -> None:
        """`wait`: how long websocket-client waits for the peer's close frame (its default is 3 s);
        0 for a link given up as dead, whose peer will never answer."""
        conn = self.pusher.connection
        conn.needs_reconnect = False
        conn.disconnect_called = True
        if conn.socket is not None:
            conn.socket.close(timeout=wait)

    def start(self) -> None:
        self.pusher.connect()

    def close(self, wait: float = 3.0) -> None:
        self._close_socket(wait)


class PusherSupervisor:
    """Keeps one Pusher connection alive by our policy and routes channel events to `on_event`."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        key: str,
        secret: str,
        events: Iterable[str],
        on_event: OnEvent,
        status: StatusSink,
        backoff: Backoff | None = None,
        options: PusherOptions | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        classifier: Classifier = classify,
    ) -> None:
        url = urlsplit(endpoint)
        self.name = name
        self.secure = url.scheme in ("wss", "https")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.secure else 80)  # pysher's port does not follow `secure`
        self._key, self._secret = key, secret
        self.events = tuple(events)
        self.on_event = on_event
        self.status = status
        self.reconnect = ReconnectLoop(name=name, status=status, classify=classifier, sleep=sleep,
                                  backoff=backoff or Backoff(base=1.0, cap=60.0, healthy_after=60.0))
        self.backoff = self.reconnect.backoff
        self.options = options or PusherOptions()
        self.channels: set[str] = set()
        self._session: _Session | None = None
        self._subscribed: set[str] = set()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self.sessions = 0
        # websocket-client has no handshake timeout of its own; this process-wide default
        # bounds the handshake (and only blocking reads, which run_forever does not do).
        websocket.setdefaulttimeout(self.options.handshake_timeout)

    # -- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        self.reconnect.stop()
        self._inbox.put_nowait(("stop",))

    def set_channels(self, channels: Iterable[str]) -> None:
        self.channels = {c for c in channels if c}
        if self._session is not None and self._session.established:
            self._sync_subscriptions()

    async def run(self) -> None:
        await self.reconnect.run(self._connect_once)

    # -- one session ---------------------------------------------------------------------------
    async def _connect_once(self) -> LinkEnded:
        outcome, code, reason = await self._run_session()
        code = code if outcome == "closed" else None  # only a close frame or pusher:error has a code
        return LinkEnded(error=f"closed {code}: {reason}" if code else reason, close_code=code, reason=reason,
                         lasted=self._lasted)

    async def _run_session(self) -> tuple[str, int | None, str]:
        loop = asyncio.get_running_loop()
        inbox = self._inbox = asyncio.Queue()

        # Handed over once per burst, not once per event: every call_soon_threadsafe wakes the loop
        # through its self-pipe (a system call each); a burst of datapoints shares one wake-up.
        pending: list[tuple] = []
        lock = threading.Lock()

        def drain() -> None:  # on the loop
            with lock:
                items = pending[:]
                pending.clear()
            for item in items:
                inbox.put_nowait(item)

        def report(*item) -> None:  # called on pysher's thread
            if loop.is_closed():
                return  # an old session's thread ending after the loop did: nobody is listening
            with lock:
                pending.append(item)
                if len(pending) > 1:
                    return  # a drain is already on its way and takes this one too
            try:
                loop.call_soon_threadsafe(drain)
            except RuntimeError:  # the loop closed meanwhile
                pass

        await self.status.set_state("connecting")
        session = self._session = _Session(key=self._key, secret=self._secret, host=self.host, port=self.port,
                                           secure=self.secure, options=self.options, report=report)
        self._subscribed = set()
        self.sessions += 1
        started = loop.time()
        self._connected_at: float | None = None
        session.start()
        watchdog = asyncio.create_task(self._watchdog(session, inbox, started))
        outcome = "lost"
        try:
            outcome, *rest = await self._serve(session, inbox)
            return (outcome, *rest)
        finally:
            watchdog.cancel()
            self._lasted = loop.time() - self._connected_at if self._connected_at is not None else 0.0
            self._session = None
            # A link given up as dead (watchdog, handshake timeout) is closed without waiting for a
            # close reply that cannot come: websocket-client would wait 3 s, delaying the rebuild.
            # Any close stays off the event loop: it may block on the socket.
            await asyncio.to_thread(session.close, 0 if outcome == "timeout" else 3.0)

    async def _serve(self, session: _Session, inbox: asyncio.Queue) -> tuple[str, int | None, str]:
        loop = asyncio.get_running_loop()
        last_error = ""
        while True:
            kind, *rest = await inbox.get()
            if kind == "stop":
                return "stopped", None, "stopping"
            if kind == "established":
                self._connected_at = loop.time()
                await self.status.set_state("connected")
                self._sync_subscriptions()
            elif kind == "event":
                self.status.message()
                await self.on_event(*rest)
            elif kind == "bad_frame":
                self.status.parse_error()
                throttle_for(f"skipped:{self.name}").log(log, logging.WARNING,
                                                         "%s: skipped a frame that is not JSON: %.2000r", self.name, rest[0])
            elif kind == "pusher_error":
                code, message = rest
                if code is not None and 4000 <= code <= 4299:
                    return "closed", code, message  # the close frame follows; the code decides
                # code null: e.g. a refused private-channel signature. The link stays up.
                self.status.error(f"pusher:error {code}: {message}")
                log.warning("%s: pusher:error %s: %s", self.name, code, message)
            elif kind == "error":
                last_error = rest[0]
            elif kind == "watchdog":
                return "timeout", None, rest[0]
            elif kind == "ended":
                code, reason = rest
                return ("closed" if code else "lost"), code, reason or last_error or "connection lost"

    def _sync_subscriptions(self) -> None:
        session = self._session
        for channel in sorted(self.channels - self._subscribed):
            subscribed = session.pusher.subscribe(channel)  # signs private- channels afresh
            for event in self.events:
                subscribed.bind(event, session._guard(self._channel_callback(session)), channel, event)
            self._subscribed.add(channel)
        for channel in sorted(self._subscribed - self.channels):
            session.pusher.unsubscribe(channel)
            self._subscribed.discard(channel)

    def _channel_callback(self, session: _Session) -> Callable[..., None]:
        def on_channel_event(data, channel: str, event: str) -> None:  # pysher's thread
            session.report("event", channel, event, data)
        return on_channel_event

    async def _watchdog(self, session: _Session, inbox: asyncio.Queue, started: float) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            await asyncio.sleep(opts.watchdog_tick)
            now = loop.time()
            if not session.established:
                if now - started > opts.handshake_timeout:
                    inbox.put_nowait(("watchdog", f"no connection_established within {opts.handshake_timeout:.0f}s"))
                    return
                continue
            silent_for = time.monotonic() - session.last_frame
            if silent_for > opts.stale_after:
                inbox.put_nowait(("watchdog", f"no frame for {silent_for:.0f}s: link presumed dead"))
                return
            if silent_for > opts.activity_ping and now - last_ping > opts.activity_ping:
                last_ping = now
                session.pusher.connection.send_event("pusher:ping", "")
