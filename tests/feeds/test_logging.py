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
