"""A reconnecting WebSocket client loop, provider-agnostic.

The provider supplies a `WebSocketSession` (URL, the frames to replay after each connect,
what to do with each text frame, how to read a close). This loop owns the I/O: connect with a
handshake timeout, keep-alive pings, the application heartbeat, rate-limited sends through an
`Outbox`, reconnect with `Backoff`, and a connection-attempt budget.

Why not `async for ws in websockets.connect(...)`: its backoff resets at every handshake, so a
server that accepts and then closes is retried in a tight loop. Here the policy resets only
after a healthy period (see feeds/backoff.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from feeds.backoff import Backoff
from feeds.logging import redact
from feeds.outbox import Outbox, SlidingWindow
from feeds.status import StatusSink

__all__ = ["CloseAction", "WebSocketSession", "WebSocketOptions", "ReconnectingWebSocket"]

log = logging.getLogger(__name__)


class CloseAction(enum.Enum):
    RECONNECT = "reconnect"  # back off, then try again
    STOP_AUTH = "stop_auth"  # credentials or subscription refused: never retry by ourselves


class WebSocketSession(Protocol):
    name: str

    def url(self) -> str: ...

    def on_open(self, outbox: Outbox) -> None:
        """Offer the frames to (re)play on a fresh connection, e.g. the subscription."""

    async def on_text(self, text: str) -> None: ...

    def classify_close(self, code: int | None, reason: str) -> tuple[CloseAction, str]:
        """Decide what a close means; the string is the error shown in FeedStatus."""

    def heartbeat(self) -> tuple[str, str] | None:
        """`(kind, frame)` sent every `heartbeat_interval` seconds, or None."""


@dataclass(frozen=True)
class WebSocketOptions:
    heartbeat_interval: float = 30.0
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    ping_interval: float | None = 20.0  # protocol-level pings detect a half-open link
    ping_timeout: float | None = 20.0
    max_size: int = 1 << 20
    compression: str | None = "deflate"  # permessage-deflate; None sends text frames as plain UTF-8
    connect_attempts_per_window: int = 10
    connect_window: float = 61.0


Sleep = Callable[[float], Awaitable[None]]


class ReconnectingWebSocket:
    def __init__(
        self,
        session: WebSocketSession,
        outbox: Outbox,
        *,
        status: StatusSink,
        options: WebSocketOptions | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.status = status
        self.options = options or WebSocketOptions()
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._sleep = sleep or self._interruptible_sleep
        self._attempts = SlidingWindow(self.options.connect_attempts_per_window, self.options.connect_window)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self.connections = 0  # successful handshakes, for tests and status

    # -- public -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._ws is not None:
            asyncio.ensure_future(self._ws.close(1000, "client stopping"))

    def send_soon(self, kind: str, frame: str) -> None:
        """Queue a frame; it goes out when the provider's limits allow (coalesced per kind)."""
        self.outbox.offer(kind, frame)
        self._wake.set()

    async def run(self) -> None:
        """Connect and reconnect until stopped or until the provider refuses us for good."""
        first = True
        while not self._stop.is_set():
            wait = self._attempts.wait_time(self._clock())
            if wait > 0:
                log.info("%s: connection attempt budget spent, waiting %.1fs", self.session.name, wait)
                await self._sleep(wait)
                continue
            self._attempts.record(self._clock())
            if not first:
                self.status.reconnected()
            first = False
            action, error, lasted = await self._connect_once()
            if self._stop.is_set():
                break
            if action is CloseAction.STOP_AUTH:
                log.error("%s: refused by provider, not reconnecting: %s", self.session.name, error)
                await self.status.set_state("auth_failed", error=error)
                return
            self.backoff.connection_ended(lasted=lasted)
            delay = self.backoff.next_delay()
            log.warning("%s: %s; reconnecting in %.2fs", self.session.name, error, delay)
            await self.status.set_state("backing_off", error=error)
            await self._sleep(delay)
        await self.status.set_state("stopped")

    # -- one connection -----------------------------------------------------------------
    async def _connect_once(self) -> tuple[CloseAction, str, float]:
        """Returns what to do next, the error text, and how long the connection was up."""
        opts = self.options
        await self.status.set_state("connecting")
        connected_at: float | None = None
        try:
            async with connect(
                self.session.url(),
                open_timeout=opts.open_timeout,
                close_timeout=opts.close_timeout,
                ping_interval=opts.ping_interval,
                ping_timeout=opts.ping_timeout,
                max_size=opts.max_size,
                compression=opts.compression,
            ) as ws:
                self._ws = ws
                connected_at = self._clock()
                self.connections += 1
                await self.status.set_state("connected")
                self.outbox.reset()
                self.session.on_open(self.outbox)
                self._wake.set()
                await self._serve(ws)
            code, reason = ws.close_code, ws.close_reason or ""
        except InvalidStatus as exc:
            code, reason = None, f"handshake refused with HTTP {exc.response.status_code}"
        except ConnectionClosed as exc:  # raised by the handshake or a send on a dead link
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "connection lost")
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            code, reason = None, redact(f"{type(exc).__name__}: {exc}") or type(exc).__name__
        finally:
            self._ws = None
        lasted = self._clock() - connected_at if connected_at is not None else 0.0
        if code is None:
            return CloseAction.RECONNECT, reason, lasted
        action, error = self.session.classify_close(code, reason)
        return action, error, lasted

    async def _serve(self, ws: ClientConnection) -> None:
        tasks = [asyncio.create_task(self._send_loop(ws)), asyncio.create_task(self._heartbeat_loop())]
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                await self.session.on_text(message)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_loop(self, ws: ClientConnection) -> None:
        while True:
            frame, wait = self.outbox.take(self._clock())
            if frame is not None:
                await ws.send(frame)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _heartbeat_loop(self) -> None:
        beat = self.session.heartbeat()
        if beat is None:
            return
        while True:
            await asyncio.sleep(self.options.heartbeat_interval)
            self.send_soon(*beat)

    async def _interruptible_sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        except TimeoutError:
            pass
