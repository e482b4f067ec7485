"""Keep provider secrets out of every log line.

Secrets are registered when a worker loads its account; the filter replaces them, and any
`token=`/`api_key=` query value, before a record is formatted by any handler.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_QUERY_SECRET = re.compile(r"((?:token|api_key|apikey|key|secret|password)=)[^&\s'\"]+", re.IGNORECASE)
MASK = "***"


def register_secret(value: str | None) -> None:
    """Mask `value` in every later log line (values shorter than 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda match: match.group(1) + MASK, text)
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
        return True
