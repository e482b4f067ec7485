"""Minimal HTTP/1.1 on asyncio streams for the plain-HTTP simulators (stocktwits, trendspottr): one
request per connection (every response closes it), request parsing, whole or chunked responses,
Basic credentials, and `HttpSimulator`, which serves `/control/...` from `base` on the same port
and hands every other request to the subclass's `_route()`. No Django here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import SplitResult, urlsplit

from .base import SimulatorBase, query_params

MAX_HEAD = 64 * 1024  # request line + headers
READ_TIMEOUT = 10.0  # seconds for a whole request; a stalled client gets a 400
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class BadRequest(Exception):
    """A request we cannot make sense of: answered with 400."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # origin form: path and query
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", " (RFC 9110)
    body: bytes = b""

    @property
    def url(self) -> SplitResult:
        return urlsplit(self.target)


async def read_request(reader: asyncio.StreamReader, *, max_body: int | None = None) -> Request | None:
    """Read one request; None if the client left before sending a whole head. The body is read
    only if `max_body` is set (a longer one is a BadRequest); otherwise it is ignored, as every
    response closes the connection. Raises BadRequest if malformed, TimeoutError if too slow."""
    async with asyncio.timeout(READ_TIMEOUT):
        lines = await _read_head(reader)
        if lines is None:
            return None
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise BadRequest(f"bad request line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():  # also rejects obsolete line folding
                raise BadRequest(f"bad header line {line[:80]!r}")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        body = b""
        if max_body is not None:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                raise BadRequest("bad Content-Length") from None
            if not 0 <= length <= max_body:
                raise BadRequest("body too large")
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise BadRequest("body shorter than its Content-Length") from None
        return Request(parts[0], parts[1], headers, body)


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The head's lines, without terminators (CRLF, or a bare LF as RFC 9112 lets us accept)."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # a line longer than the reader's limit
            raise BadRequest("header line too long") from None
        if not raw.endswith(b"\n"):
            return None  # the client left (or half-closed) mid-head: nobody to answer
        size += len(raw)
        if size > MAX_HEAD:
            raise BadRequest("head too large")
        line = raw.removesuffix(b"\n").removesuffix(b"\r").decode("latin-1")
        if line:
            lines.append(line)
        elif lines:
            return lines
        # else: an empty line before the request line, which RFC 9112 says to ignore


def phrase(status: int) -> str:
    """The reason phrase for `status` ("Error" for codes without one)."""
    return _PHRASES.get(status, "Error")


def head(status: int, headers: dict[str, str]) -> bytes:
    """A response's status line and headers, blank line included."""
    lines = [f"HTTP/1.1 {status} {phrase(status)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; nothing for no data (an empty chunk would end the body)."""
    return f"{len(data):X}\r\n".encode() + data + b"\r\n" if data else b""


async def respond(writer: asyncio.StreamWriter, status: int, body: str | bytes | dict[str, Any] | list[Any],
                  content_type: str | None = None, headers: dict[str, str] | None = None) -> None:
    """A whole response, and the connection closes after it. A dict or list body is sent as JSON,
    a str as UTF-8 text; bytes as they are, with `content_type`."""
    if isinstance(body, (dict, list)):
        data, default_type = json.dumps(body).encode(), "application/json"
    elif isinstance(body, str):
        data, default_type = body.encode(), "text/plain; charset=utf-8"
    else:
        data, default_type = body, "application/octet-stream"
    writer.write(head(status, {"Content-Type": content_type or default_type, "Content-Length": str(len(data)),
                               "Connection": "close", **(headers or {})}) + data)
    await writer.drain()


def basic_credentials(header: str) -> str | None:
    """"user:password" from an `Authorization: Basic ...` value; None if absent or malformed."""
    scheme, _, encoded = header.partition(" ")
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode() if scheme.lower() == "basic" else None
    except (binascii.Error, UnicodeDecodeError):
        return None


async def watch_eof(reader: asyncio.StreamReader, on_eof: Callable[[], None]) -> None:
    """Call `on_eof` once the client hangs up (while idle, only the next write would find out)."""
    try:
        while await reader.read(4096):
            pass  # nothing is expected after the request; ignore whatever comes
    except ConnectionError:
        pass
    on_eof()


class HttpSimulator(SimulatorBase):
    """Subclasses implement `_route()` for every path but /control/... and start with `_listen()`;
    stop with `_shutdown()`, which also ends requests still being served."""

    max_body: int | None = None  # request bodies are read only if a subclass allows them

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve_http, self.host, port)

    async def _shutdown(self) -> None:
        """Stop listening; cancel background tasks and the handlers of open connections (Python
        3.11's wait_closed() does not wait for handlers)."""
        if self._server:
            self._server.close()
        await self._cancel_tasks()
        if self._server:
            await self._server.wait_closed()

    async def _route(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                request = await read_request(reader, max_body=self.max_body)
            except (BadRequest, TimeoutError):
                return await respond(writer, 400, "Bad Request\n")
            if request is None:
                return  # connected and left
            url = request.url
            if url.path.startswith("/control/"):
                query = query_params(url.query, keep_blank=True)
                return await respond(writer, *await self._control(url.path.removeprefix("/control/"), query))
            await self._route(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing more to say
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's start_server logs a handler that ends cancelled)
        finally:
            self._tasks.discard(task)
            writer.close()
