"""Alert destinations' wire formats (pure) and a thin transport under them.

The builders take an `AlertMessage` (plain data, no ORM) and return what goes on the wire: Slack
incoming-webhook JSON, a Teams workflow message carrying an Adaptive Card, an e-mail's subject and
body, and a Standard Webhooks request (https://www.standardwebhooks.com/: `webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
`outcome_classify` turns what a send returned into delivered / retry / dead / disable, and
`retry_delay` is the backoff. Provider strings (headlines come from the wire) are escaped for
each format: a headline must never become a Slack mention, a link or markup.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets as _secrets
import smtplib
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection

__all__ = [
    "AlertMessage", "Outcome", "SendResult", "slack_payload", "teams_payload", "email_content", "webhook_body",
    "webhook_headers", "webhook_sign", "secret_generate", "secret_key_bytes", "outcome_classify", "retry_delay",
    "http_send", "email_send", "message_send", "HTTP_TIMEOUT",
]

# Connect within 5 s and finish within 10 s: a slow receiver costs one slot for at most that long.
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TOTAL_SECONDS = 10.0
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class AlertMessage:
    kind: str  # "fire" | "revoke"
    provider: str
    external_id: str
    symbol: str
    level: str
    headline: str
    description: str
    url: str
    triggered_at: datetime
    revoked_at: datetime | None = None
    test: bool = False

    @property
    def title(self) -> str:
        what = "Test alert" if self.test else "Alert withdrawn" if self.kind == "revoke" else "Alert"
        subject = f"{self.symbol}: " if self.symbol and not self.headline.startswith(f"{self.symbol}:") else ""
        return f"{what} ({self.provider}{', ' + self.level if self.level else ''}): {subject}{self.headline}"

    def as_json(self) -> dict:
        return {"provider": self.provider, "external_id": self.external_id, "symbol": self.symbol,
                "level": self.level, "headline": self.headline, "description": self.description, "url": self.url,
                "triggered_at": _iso(self.triggered_at),
                "revoked_at": _iso(self.revoked_at) if self.revoked_at else None}


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _safe_url(url: str) -> str:
    # Only web links become links; a `javascript:` or Slack `<!channel>` smuggled in as a URL does not.
    return url if url.startswith(("https://", "http://")) else ""


# --- Slack ----------------------------------------------------------------------------------------

def slack_escape(text: str) -> str:
    """Slack's three control characters (mrkdwn): `<!channel>` and `<url|label>` stay text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: AlertMessage) -> dict:
    title = slack_escape(message.title)
    detail = slack_escape(message.description)
    url = _safe_url(message.url)
    text = f"~{title}~" if message.kind == "revoke" else title
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    if detail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": detail[:2900]}})
    if url:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{slack_escape(url)}|Source>"}]})
    # `text` is the notification and the fallback where blocks are not shown.
    return {"text": title[:3000], "blocks": blocks}


# --- Microsoft Teams (workflow webhook: "Post to a channel when a webhook request is received") -----

_MARKDOWN_SPECIAL = "\\`*_[]()~<>"  # the subset Adaptive Cards render: emphasis and links


def markdown_escape(text: str) -> str:
    """Adaptive Card TextBlocks render a Markdown subset: a headline must not become a link."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in text)


def teams_payload(message: AlertMessage) -> dict:
    body: list[dict] = [{"type": "TextBlock", "text": markdown_escape(message.title), "weight": "Bolder",
                         "wrap": True, "color": "Default" if message.kind == "fire" else "Warning"}]
    if message.description:
        body.append({"type": "TextBlock", "text": markdown_escape(message.description), "wrap": True})
    card: dict = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                  "version": "1.4", "body": body}
    if url := _safe_url(message.url):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Source", "url": url}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


# --- E-mail ---------------------------------------------------------------------------------------

def email_content(message: AlertMessage) -> tuple[str, str]:
    """(subject, plain-text body). Line breaks leave the subject: no header injection."""
    subject = " ".join(message.title.split())[:200]
    lines = [message.title, ""]
    if message.description:
        lines += [message.description, ""]
    if url := _safe_url(message.url):
        lines += [url, ""]
    lines.append(f"Triggered at {_iso(message.triggered_at)}"
                 + (f", withdrawn at {_iso(message.revoked_at)}" if message.revoked_at else "") + ".")
    return subject, "\n".join(lines) + "\n"


# --- Standard Webhooks ------------------------------------------------------------------------------

def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key: the base64 part of `whsec_<base64>`. Raises ValueError if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return key


def webhook_body(message: AlertMessage, *, sent_at: datetime) -> bytes:
    kind = "alert.test" if message.test else "alert.revoked" if message.kind == "revoke" else "alert.fired"
    return json.dumps({"type": kind, "timestamp": _iso(sent_at), "data": message.as_json()},
                      separators=(",", ":")).encode()


def webhook_sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret_key_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(*, msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> dict[str, str]:
    """Headers for one attempt; every given secret signs (space-separated), the newest first."""
    signatures = " ".join(webhook_sign(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets if s)
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures}


# --- Outcomes and backoff ------------------------------------------------------------------------

@dataclass(frozen=True)
class SendResult:
    status: int | None = None  # HTTP status; None when no response came
    error: str = ""  # a failure without a response (timeout, refused); never holds a URL or secret
    retry_after: float | None = None  # seconds, from a Retry-After header
    permanent: bool = False  # refused for good without an HTTP status (an SMTP 5xx)


@dataclass(frozen=True)
class Outcome:
    action: str  # "delivered" | "retry" | "dead" | "disable"
    error: str = ""
    not_before: float = 0.0  # the receiver asked us to wait at least this long


def outcome_classify(result: SendResult) -> Outcome:
    status = result.status
    if result.permanent:
        return Outcome("dead", result.error or "refused")
    if status is None:
        return Outcome("retry", result.error or "no response")
    if 200 <= status < 300:
        return Outcome("delivered")
    if status == 410:  # the receiver says the endpoint is gone for good (Slack, Standard Webhooks)
        return Outcome("disable", "410 Gone: the destination was disabled")
    if status in (408, 429) or status >= 500:
        return Outcome("retry", f"HTTP {status}", result.retry_after or 0.0)
    return Outcome("dead", f"HTTP {status}: the receiver refused it; a retry would be refused too")


def retry_delay(attempts: int, *, base: float = 10.0, cap: float = 3600.0, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempts + 1`: exponential (10 s, 20 s, 40 s … capped at an hour),
    with jitter in [50 %, 100 %] so receivers coming back from an outage are not hit in step."""
    ceiling = min(cap, base * 2 ** max(attempts - 1, 0))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


async def address_refusal(url: str) -> str | None:
    """Why `url` may not be posted to, or None. A team owner types the URL and the server makes the
    request: without this an owner could reach what only the server sees (Redis, PostgreSQL, a cloud
    metadata endpoint). Every address the host resolves to must be public, or inside one of
    ALERT_DESTINATION_ALLOWED_NETWORKS (an operator's own internal receivers). httpx follows no
    redirect, so the address checked is the one posted to, save a DNS answer that changes between
    the check and the connect."""
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # unresolvable: the send fails as a connection error and is retried
    allowed = [ipaddress.ip_network(net, strict=False) for net in settings.ALERT_DESTINATION_ALLOWED_NETWORKS]
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if any(address in net for net in allowed):
            continue
        if not address.is_global or address.is_multicast:
            return ("the destination's address is not public (loopback, private, link-local or reserved); "
                    "allow its network in ALERT_DESTINATION_ALLOWED_NETWORKS")
    return None


async def http_send(client: httpx.AsyncClient, *, url: str, body: bytes, headers: dict[str, str],
                    total_seconds: float = TOTAL_SECONDS) -> SendResult:
    """POST once. Errors are described by type only: an httpx message can hold the URL, and a
    Slack or Teams webhook URL is itself the credential."""
    refusal = await address_refusal(url)
    if refusal:
        return SendResult(error=refusal, permanent=True)
    try:
        async with asyncio.timeout(total_seconds):
            response = await client.post(url, content=body, headers=headers)
    except (TimeoutError, httpx.TimeoutException):
        return SendResult(error="timed out")
    except httpx.HTTPError as exc:
        return SendResult(error=f"connection failed ({type(exc).__name__})")
    return SendResult(status=response.status_code, retry_after=_retry_after(response.headers.get("retry-after")))


def _email_send_blocking(*, to: str, subject: str, body: str, timeout: float) -> SendResult:
    try:
        # EMAIL_TIMEOUT bounds each SMTP step; `timeout` only when it is shorter (a test's bound).
        connection = get_connection(timeout=min(timeout, settings.EMAIL_TIMEOUT))
        EmailMessage(subject=subject, body=body, to=[to], connection=connection).send()
    except smtplib.SMTPRecipientsRefused:
        return SendResult(error="SMTP: the recipient was refused", permanent=True)
    except smtplib.SMTPResponseException as exc:
        # 4xx: try again later (greylisting, a full queue); 5xx: refused for good.
        return SendResult(error=f"SMTP {exc.smtp_code}", permanent=exc.smtp_code >= 500)
    except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, disconnected
        return SendResult(error=f"SMTP connection failed ({type(exc).__name__})")
    return SendResult(status=250)


async def email_send(*, to: str, message: AlertMessage, timeout: float = TOTAL_SECONDS) -> SendResult:
    """Through Django's e-mail backend (SMTP settings from the environment), on a thread: smtplib
    blocks. The backend's socket timeout bounds each step; the thread is not cancellable."""
    subject, body = email_content(message)
    return await asyncio.to_thread(_email_send_blocking, to=to, subject=subject, body=body, timeout=timeout)


async def message_send(client: httpx.AsyncClient, *, kind: str, target: str, secrets: list[str], msg_id: str,
                       message: AlertMessage, now: datetime, total_seconds: float = TOTAL_SECONDS) -> SendResult:
    """One attempt to one destination of `kind` ("slack", "teams", "email", "webhook")."""
    if kind == "email":
        return await email_send(to=target, message=message, timeout=total_seconds)
    if kind == "webhook":
        body = webhook_body(message, sent_at=now)
        headers = webhook_headers(msg_id=msg_id, timestamp=int(now.timestamp()), body=body, secrets=secrets)
    else:
        payload = slack_payload(message) if kind == "slack" else teams_payload(message)
        body, headers = json.dumps(payload).encode(), {"content-type": "application/json"}
    headers["user-agent"] = "Tickerwire-alerts/1"
    return await http_send(client, url=target, body=body, headers=headers, total_seconds=total_seconds)
