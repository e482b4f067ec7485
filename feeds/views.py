"""Webhook receivers. Thin: check, store, answer; the processing runs after the response.

Status codes (../shared/notes/reliability.md, "Webhook receivers"): 405 not POST; 404 unknown
path token; 400 not UTF-8 JSON, not an object, over the size cap, nested too deeply, holding
what the database cannot store, or no valid event id; 401 no secret; 403 wrong secret; 200 stored
(or a duplicate: no effect); 503 only when we could not store, because then a retry by the
provider is exactly what we want. Never a 500 for bad input: the provider would retry it four
times. Processing (feeds/webhook_processor.py) never delays the 200; a failed one stays stored
with its error and is retried from the row.
"""

from __future__ import annotations

import hmac
import logging
from functools import partial

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import WebhookConfig
from .providers.base import UnsupportedMessage, json_loads
from .providers.trendspottr.webhook import PROVIDER, check_storable, event_id_of, secret_matches, without_secret
from .services import webhook_delivery_store
from .webhook_processor import processor

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024


def _reply(status: int, message: str) -> JsonResponse:
    return JsonResponse({"status": message}, status=status)


def _config_for(token: str) -> WebhookConfig | None:
    config = WebhookConfig.objects.filter(provider=PROVIDER).first()
    if config is None or not hmac.compare_digest(token.encode(), config.path_token.encode()):
        return None
    return config


@csrf_exempt  # a provider cannot send our CSRF token; the path token and body secret authenticate it
@require_POST
def trendspottr_webhook(request: HttpRequest, token: str) -> HttpResponse:
    config = _config_for(token)
    if config is None:
        log.warning("trendspottr webhook: unknown path token from %s", request.META.get("REMOTE_ADDR"))
        return _reply(404, "not found")
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES:
            return _reply(400, "body too large")
        body = request.body
    except (RequestDataTooBig, ValueError):
        return _reply(400, "body too large")
    if len(body) > MAX_BODY_BYTES:
        return _reply(400, "body too large")
    try:
        payload = json_loads(body.decode("utf-8"))  # JSON between systems is UTF-8 (RFC 8259 §8.1)
    except UnicodeDecodeError:
        return _reply(400, "body is not UTF-8")
    except UnsupportedMessage:  # also nesting too deep for the parser, and NaN/Infinity
        return _reply(400, "body is not JSON")
    if not isinstance(payload, dict):
        return _reply(400, "body is not a JSON object")
    if "secret" not in payload:
        return _reply(401, "secret missing")
    if not secret_matches(payload["secret"], [config.secret_sha256, config.previous_secret_sha256]):
        log.warning("trendspottr webhook: wrong secret from %s", request.META.get("REMOTE_ADDR"))
        return _reply(403, "secret rejected")
    try:
        event_id = event_id_of(payload)
    except UnsupportedMessage:
        return _reply(400, "event_id must be an unsigned 64-bit integer")
    try:
        check_storable(payload)
    except UnsupportedMessage as exc:
        return _reply(400, str(exc))
    try:
        delivery, created = webhook_delivery_store(provider=PROVIDER, event_id=event_id, payload=without_secret(payload))
    except DatabaseError:
        log.exception("trendspottr webhook: could not store event %s", event_id)
        return _reply(503, "try again later")
    if created:
        # After the commit and off this thread: the answer never waits for processing.
        transaction.on_commit(partial(processor.submit, delivery.pk))
    return _reply(200, "ok" if created else "duplicate")
