"""A reconnecting server-sent-events client loop over httpx, provider-agnostic.

The provider supplies an `SseSession` (the request to make, what to do with each event's
data, how to read a non-200 status). The loop owns the I/O: a streaming GET with a read
timeout that doubles as the idle detector, incremental gzip and UTF-8 decoding (httpx's
`aiter_text`), SSE decoding with a per-event size cap (`SseDecoder`). Reconnecting after any cut,
timeout or refusal the provider's classifier calls retryable is the shared loop in
feeds/transports/reconnect.py.

Any `httpx.TransportError` is a cut: a stream broken inside a gzip member raises
`RemoteProtocolError`, not `ReadError` (../shared/notes/reliability.md, "httpx + SSE").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from feeds.backoff import Backoff
from feeds.logging import redact
from feeds.status import StatusSink

from .reconnect import Decision, LinkEnded, ReconnectLoop, Sleep
from .sse_decoder import MAX_EVENT_BYTES, SseDecoder

__all__ = ["SseRequest", "SseSession", "ReconnectingSse"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SseRequest:
    url: str
    params: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None


class SseSession(Protocol):
    name: str

    async def request(self) -> SseRequest:
        """The request for the next connection (e.g. with the resume position)."""

    async def on_event(self, data: str) -> None: ...

    def classify(self, ended: LinkEnded) -> Decision:
        """Retry (with which floor) or stop (in which FeedStatus state): see reconnect.py."""


class ReconnectingSse:
    def __init__(
        self,
        session: SseSession,
        *,
        status: StatusSink,
        backoff: Backoff | None = None,
        read_timeout: float = 60.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        if not 45 <= read_timeout <= 75 and transport is None:
            # The provider asks for more than 30 s; httpx's 5 s default would cut the stream.
            raise ValueError("read_timeout must be within 45..75 s for a provider stream")
        self.session = session
        self.status = status
        self.reconnect = ReconnectLoop(name=session.name, status=status, classify=session.classify, backoff=backoff,
                                  clock=clock, sleep=sleep)
        self.backoff = self.reconnect.backoff
        self.max_event_bytes = max_event_bytes
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._transport = transport
        self._clock = clock
        self._wake = asyncio.Event()  # set by stop(): ends a stream early
        self.connections = 0

    def stop(self) -> None:
        self.reconnect.stop()
        self._wake.set()

    async def run(self) -> None:
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip", "Cache-Control": "no-store"}
        async with httpx.AsyncClient(timeout=self._timeout, headers=headers, transport=self._transport) as client:
            await self.reconnect.run(lambda: self._stream_once(client))

    async def _stream_once(self, client: httpx.AsyncClient) -> LinkEnded:
        await self.status.set_state("connecting")
        request = await self.session.request()
        connected_at: float | None = None

        def ended(error: str, **kwargs) -> LinkEnded:
            lasted = self._clock() - connected_at if connected_at is not None else 0.0
            return LinkEnded(error=error, lasted=lasted, **kwargs)

        try:
            async with client.stream("GET", request.url, params=request.params, auth=request.auth) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:300].decode("utf-8", errors="replace").strip()
                    return ended(f"HTTP {response.status_code}: {body}", http_status=response.status_code)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    return ended(f"unexpected content type {response.headers.get('content-type')!r}")
                connected_at = self._clock()
                self.connections += 1
                await self.status.set_state("connected")
                decoder = SseDecoder(max_event_bytes=self.max_event_bytes)
                reader = asyncio.ensure_future(self._read(response, decoder))
                stopper = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if reader not in done:
                    reader.cancel()
                    return ended("stopping")
                reader.result()
                return ended("stream ended by the server")
        except httpx.TransportError as exc:  # cut, reset, timeout, broken gzip
            return ended(redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))

    async def _read(self, response: httpx.Response, decoder: SseDecoder) -> None:
        dropped = 0
        async for text in response.aiter_text():
            for event in decoder.feed(text):
                await self.session.on_event(event.data)
            if decoder.oversized > dropped:
                for _ in range(decoder.oversized - dropped):
                    self.status.parse_error()
                log.warning("%s: dropped an event over %d bytes", self.session.name, self.max_event_bytes)
                dropped = decoder.oversized
