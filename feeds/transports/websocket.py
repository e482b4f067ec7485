"""A reconnecting WebSocket client loop, provider-agnostic.

The provider supplies a `WebSocketSession` (URL, the frames to replay after each connect,
what to do with each text frame, and a classifier: how a close or refusal ends, retry or stop).
This module owns one connection's I/O: connect with a handshake timeout, keep-alive pings, the
application heartbeat, rate-limited sends through an `Outbox`. Reconnecting (backoff, the
connection-attempt budget, retry-or-stop) is the shared loop in feeds/transports/reconnect.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from feeds.backoff import Backoff
from feeds.logging import redact
from feeds.outbox import Outbox, SlidingWindow
from feeds.status import StatusSink

from .reconnect import Decision, LinkEnded, ReconnectLoop, Sleep, describe_close

__all__ = ["WebSocketSession", "WebSocketOptions", "ReconnectingWebSocket"]

log = logging.getLogger(__name__)


class WebSocketSession(Protocol):
    name: str

    def url(self) -> str: ...

    def on_open(self, outbox: Outbox) -> None:
        """Offer the frames to (re)play on a fresh connection, e.g. the subscription."""

    async def on_text(self, text: str) -> None: ...

    def classify(self, ended: LinkEnded) -> Decision:
        """Retry (with which floor) or stop (in which FeedStatus state): see reconnect.py."""

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
        self._clock = clock
        self.reconnect = ReconnectLoop(
            name=session.name, status=status, classify=session.classify, backoff=backoff, clock=clock, sleep=sleep,
            attempts=SlidingWindow(self.options.connect_attempts_per_window, self.options.connect_window),
        )
        self.backoff = self.reconnect.backoff
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self.connections = 0  # successful handshakes, for tests and status

    # -- public -------------------------------------------------------------------------
    def stop(self) -> None:
        self.reconnect.stop()
        self._wake.set()
        if self._ws is not None:
            asyncio.ensure_future(self._ws.close(1000, "client stopping"))

    def send_soon(self, kind: str, frame: str) -> None:
        """Queue a frame; it goes out when the provider's limits allow (coalesced per kind)."""
        self.outbox.offer(kind, frame)
        self._wake.set()

    async def run(self) -> None:
        """Connect and reconnect until stopped or until the provider refuses us for good."""
        await self.reconnect.run(self._connect_once)

    # -- one connection -----------------------------------------------------------------
    async def _connect_once(self) -> LinkEnded:
        opts = self.options
        await self.status.set_state("connecting")
        connected_at: float | None = None
        code, status_code = None, None
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
            status_code = exc.response.status_code
            reason = f"handshake refused with HTTP {status_code}"
        except ConnectionClosed as exc:  # raised by the handshake or a send on a dead link
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "connection lost")
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}") or type(exc).__name__
        finally:
            self._ws = None
        lasted = self._clock() - connected_at if connected_at is not None else 0.0
        error = describe_close(code, reason) if code is not None else reason
        return LinkEnded(error=error, close_code=code, http_status=status_code, reason=reason, lasted=lasted)

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
