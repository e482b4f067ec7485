"""Loopback receivers for alert destinations: an HTTP receiver whose answers a test scripts (a
status, slowly, or never), a Standard Webhooks verifier written from the specification (not from
dashboard.senders, so a signing bug cannot agree with itself), and a real SMTP server (aiosmtpd).

Each runs on its own thread and event loop, so a test (sync, on the database) drives the delivery
worker, on yet another thread, against them the way production does: over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from feeds.simulators.http import read_request, respond


def wait_until(condition, *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def verify_standard_webhook(*, secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300.0) -> bool:
    """True if any `v1,` signature in `webhook-signature` is HMAC-SHA256(key, "id.timestamp.body")
    under `secret` (`whsec_<base64 key>`) and the timestamp is within `tolerance` of now."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    for candidate in headers.get("webhook-signature", "").split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (the sender's timeout must end it)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None  # the status we answered, or None (hung)


class HttpReceiver:
    """`script`: answers in order, the last repeated. `secret`: answer 401 to a bad signature."""

    def __init__(self, *script: Answer, secret: str | None = None) -> None:
        self.script = list(script) or [Answer()]
        self.secret = secret
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release = None  # set on the loop: lets hung answers go when stopping
        self._thread = threading.Thread(target=self._run, name="http-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("receiver did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._release.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader, max_body=1 << 20)
            if request is None:
                return
            with self._lock:
                answer = self.script[min(len(self.received), len(self.script) - 1)]
                status = answer.status
                if self.secret and not verify_standard_webhook(secret=self.secret, headers=request.headers,
                                                               body=request.body):
                    status = 401
                self.received.append(Received(request.target, request.headers, request.body,
                                              None if answer.hang else status))
            if answer.hang:
                await self._release.wait()
                return
            if answer.delay:
                await asyncio.sleep(answer.delay)  # the receiver's behaviour under test, not a synchronisation
            await respond(writer, status, {"ok": 200 <= status < 300}, headers=answer.headers)
        finally:
            writer.close()

    def count(self) -> int:
        with self._lock:
            return len(self.received)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_with: str | None = None  # e.g. "550 no such user"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on loopback; `messages` holds what it accepted."""

    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.port = free_port()
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self):
        return self.mailbox.messages

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()
