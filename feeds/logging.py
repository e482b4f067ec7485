"""Keep provider secrets out of every log line.

Secrets are registered when a process decrypts or encrypts them (feeds/crypto.py) or a worker
loads its account; the filter replaces them, any `token=`/`api_key=` query value, and the path
token of every webhook URL (`/hooks/<provider>/<token>/`, known or not: a probe with a wrong token
is masked too), before a record is formatted by any handler (the message, and the traceback text,
which exception messages with URLs in them reach too). Daphne writes its access lines straight to
a stream, not through logging: `redact_daphne_access_log()` masks those.

`JsonFormatter` writes one JSON object per line for log shippers (`LOG_FORMAT=json`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime, timezone

_lock = threading.Lock()
_secrets: set[str] = set()
_QUERY_SECRET = re.compile(r"((?:token|api_key|apikey|key|secret|password)=)[^&\s'\"]+", re.IGNORECASE)
# The webhook URL's path segment after the provider's name authenticates the caller (feeds/urls.py).
_WEBHOOK_PATH = re.compile(r"(/hooks/[A-Za-z0-9_-]+/)[^/\s?#\"']+")
MASK = "***"


def register_secret(value: str | None) -> None:
    """Mask `value` in every later log line (values shorter than 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def mask_webhook_path(text: str) -> str:
    return _WEBHOOK_PATH.sub(lambda match: match.group(1) + MASK, text)


def redact(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda match: match.group(1) + MASK, text)
    text = mask_webhook_path(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        # Formatters reuse a cached exc_text: filling it here, redacted, covers every handler.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_daphne_access_log() -> None:
    """Mask secrets in Daphne's access lines (`"POST /hooks/trendspottr/<token>/" 200`).

    Daphne's CLI hands its `AccessLogGenerator` a raw stream (stdout), so no logging filter ever
    sees those lines; wrapping its one writer is the only seam that covers the stock `daphne`
    command. Called once by project/asgi.py, which Daphne imports before it serves anything.
    tests/feeds/test_logging.py pins the locked Daphne's signature.
    """
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.write_entry
    if getattr(original, "redacts", False):
        return

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    write_entry.redacts = True
    AccessLogGenerator.write_entry = write_entry


_role = ""


def set_process_role(role: str) -> None:
    """Name this process in JSON log lines (e.g. "server", "runfeed:stocknews")."""
    global _role
    _role = role


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601, UTC), level, logger, message, the process role
    and pid, and the traceback as text under `exc_info`. Newlines inside values are escaped by
    JSON, so a traceback never splits a record across lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if _role:
            entry["role"] = _role
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)
