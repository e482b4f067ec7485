"""What the WebSocket simulators (stocknews, insightsentry, knowsis) share on top of `base`: a
`websockets` server whose handshake hook answers `/control/...` as plain HTTP on the same port,
JSON responses, and helpers over the open connections and incoming messages. No Django here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterable
from urllib.parse import SplitResult, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .base import SimulatorBase, query_params


class WebSocketSimulator(SimulatorBase):
    """Subclasses implement `_handshake()` (every path but /control/...) and `_handle()`, and
    start with `_serve()`; `received` logs every message as (connection number, message)."""

    received: list[tuple[int, Any]]

    async def _serve(self, port: int, **options: Any) -> Server:
        # ping_interval=None: clients drive keep-alive on these services; protocol-level pings
        # from us would hide client keep-alive bugs.
        return await serve(self._handle, self.host, port, process_request=self._process_request,
                           ping_interval=None, **options)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.startswith("/control/"):
            status, payload = await self._control(url.path.removeprefix("/control/"), query_params(url.query))
            return json_response(connection, status, payload)
        return await self._handshake(connection, url)

    async def _handshake(self, connection: ServerConnection, url: SplitResult) -> Response | None:
        """None accepts the WebSocket handshake; a response (see `connection.respond`) refuses it."""
        raise NotImplementedError

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _all_ws(self) -> list[ServerConnection]:
        """Every open connection, past the handshake, whatever the simulator thinks of it."""
        return list(self._server.connections) if self._server else []

    def _record(self, number: int, raw: str | bytes) -> tuple[str, Any, bool]:
        """Log an incoming message in `received`: (its text, the message, whether it was JSON).
        A message that isn't JSON is logged as its raw text, so tests can see what was sent."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            message, is_json = json.loads(text), True
        except ValueError:
            message, is_json = text, False
        self.received.append((number, message))
        self._notify()
        return text, message, is_json


async def close_connections(connections: Iterable[ServerConnection], code: int, reason: str = "") -> int:
    """Close each connection with `code` and `reason`, all at once; returns how many."""
    connections = list(connections)
    await asyncio.gather(*(ws.close(code, reason) for ws in connections), return_exceptions=True)
    return len(connections)


def drop_connections(connections: Iterable[ServerConnection]) -> int:
    """Abort each TCP connection without a close frame (a crashed server or dead network)."""
    connections = list(connections)
    for ws in connections:
        ws.transport.abort()
    return len(connections)


def json_response(connection: ServerConnection, status: int, payload: Any) -> Response:
    response = connection.respond(status, json.dumps(payload))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
