from __future__ import annotations

import logging

from feeds.logging import RedactSecretsFilter, redact, register_secret


def test_registered_secrets_and_query_tokens_are_masked(caplog):
    register_secret("s3cr3t-api-key-value")
    assert redact("connect wss://h/ws?token=abc123&x=1") == "connect wss://h/ws?token=***&x=1"
    logger = logging.getLogger("tests.redaction")
    logger.addFilter(RedactSecretsFilter())
    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        logger.info("failed with key %s", "s3cr3t-api-key-value")
    assert "s3cr3t-api-key-value" not in caplog.text and "failed with key ***" in caplog.text


def _json_logger(name: str):
    import io

    from feeds.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_parse_and_carry_the_traceback_with_secrets_masked():
    import json
    from datetime import datetime, timedelta, timezone

    from feeds.logging import set_process_role

    register_secret("json-secret-token-77")
    set_process_role("runfeed:stocknews")
    logger, stream = _json_logger("tests.json_lines")
    logger.info("connecting with %s", "json-secret-token-77")
    try:
        raise ConnectionError("refused: wss://h/ws?token=json-secret-token-77")
    except ConnectionError:
        logger.exception("feed crashed\nsecond line of the message")
    set_process_role("")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # one object per line, newlines inside values escaped
    first, second = (json.loads(line) for line in lines)
    assert "json-secret-token-77" not in stream.getvalue()
    assert first["message"] == "connecting with ***" and first["level"] == "INFO"
    assert first["logger"] == "tests.json_lines" and first["role"] == "runfeed:stocknews"
    logged_at = datetime.fromisoformat(first["time"])
    assert logged_at.utcoffset() == timedelta(0) and first["time"].endswith("Z")
    assert abs(datetime.now(timezone.utc) - logged_at) < timedelta(seconds=30)
    assert second["level"] == "ERROR" and second["message"] == "feed crashed\nsecond line of the message"
    assert second["exc_info"].startswith("Traceback (most recent call last):")
    assert "ConnectionError: refused: wss://h/ws?token=***" in second["exc_info"]


def test_log_format_json_switches_the_console_of_a_configured_process():
    """The real settings in a fresh process: LOG_FORMAT=json gives JSON lines on stderr."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import django, logging; django.setup()\n"
        "from feeds.logging import register_secret; register_secret('subprocess-secret-99')\n"
        "log = logging.getLogger('feeds.runner')\n"
        "log.warning('token subprocess-secret-99 refused')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('boom')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(r["level"], r["message"]) for r in records] == [("WARNING", "token *** refused"), ("ERROR", "boom")]
    assert "ZeroDivisionError: division by zero" in records[1]["exc_info"]
    assert "subprocess-secret-99" not in result.stderr


def test_webhook_path_tokens_are_masked_known_or_not():
    line = 'Forbidden: /hooks/trendspottr/Zq8-never-registered_91x/ "POST /hooks/trendspottr/abc123DEF/?x=1"'
    assert redact(line) == 'Forbidden: /hooks/trendspottr/***/ "POST /hooks/trendspottr/***/?x=1"'


def test_daphne_access_lines_are_redacted_at_daphne_own_writer():
    """Daphne's CLI writes access lines to a raw stream that no logging filter sees."""
    import io

    from daphne.access import AccessLogGenerator

    from feeds.logging import redact_daphne_access_log

    redact_daphne_access_log()
    redact_daphne_access_log()  # once only, however often the ASGI module is imported
    stream = io.StringIO()
    AccessLogGenerator(stream)("http", "complete", {"client": "127.0.0.1:5000", "method": "POST", "status": 200,
                                                    "path": "/hooks/trendspottr/s3cr3t-path-token-42/", "size": 15})
    assert '"POST /hooks/trendspottr/***/" 200 15' in stream.getvalue()
    assert "s3cr3t-path-token-42" not in stream.getvalue()
