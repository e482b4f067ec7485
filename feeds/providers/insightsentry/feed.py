"""InsightSentry realtime quotes and bars over the reconnecting WebSocket loop.

Wire reference: ../shared/providers/insightsentry-realtime.md and ../shared/notes/providers.md
(A1). One subscribe message carries the API key and the *whole* subscription list (a quote and
a series entry per watched instrument) and replaces the previous set; it is validated before it
is sent, because the provider drops the connection on an invalid message. Text `ping` every 20 s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone

from feeds.backoff import Backoff
from feeds.events import Event
from feeds.outbox import TOTAL, Outbox
from feeds.pipeline import Pipeline
from feeds.providers.base import Notice, parse_counted
from feeds.status import StatusSink
from feeds.transports.reconnect import Decision, LinkEnded, Retry
from feeds.transports.websocket import ReconnectingWebSocket, WebSocketOptions

from .parse import FATAL_ERRORS, PROVIDER, parse_message
from .subscription import SeriesSettings, build_subscribe

__all__ = ["InsightSentryFeed", "classify"]

log = logging.getLogger(__name__)

# Undocumented limit reported by users: ~300 messages per 5 minutes are honoured. Stay far below.
CLIENT_LIMITS = {"subscribe": 10, "ping": 10, TOTAL: 30}
FATAL_HOLD_OFF = 300.0  # seconds: after max_connections_exceeded / connection_evicted


def classify(ended: LinkEnded, *, fatal_error: str | None = None, hold_off: float = FATAL_HOLD_OFF) -> Decision:
    """Every end is retried. After a fatal provider error on that link (`fatal_error`, one of
    FATAL_ERRORS) reconnecting at once would be refused again, or evict our other session:
    the next attempt waits at least `hold_off`."""
    return Retry(floor=hold_off) if fatal_error in FATAL_ERRORS else Retry()


class InsightSentryFeed:
    name = PROVIDER

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: str,
        pipeline: Pipeline,
        status: StatusSink,
        series: SeriesSettings | None = None,
        options: WebSocketOptions | None = None,
        backoff: Backoff | None = None,
        fatal_hold_off: float = FATAL_HOLD_OFF,
        **transport_kwargs,
    ) -> None:
        self.endpoint = endpoint
        self._api_key = api_key
        self.pipeline = pipeline
        self.status = status
        self.series = series or SeriesSettings()
        self.fatal_hold_off = fatal_hold_off
        self.codes: frozenset[str] = frozenset()
        self._frame: str | None = None
        self._fatal_error: str | None = None  # the fatal provider error seen on the current link
        self.transport = ReconnectingWebSocket(
            self,
            Outbox(CLIENT_LIMITS, priority=("subscribe", "ping")),
            status=status,
            options=options or WebSocketOptions(heartbeat_interval=20.0),
            backoff=backoff or Backoff(base=1.0, cap=60.0, healthy_after=60.0),
            **transport_kwargs,
        )

    @classmethod
    def from_account(cls, account, **kwargs) -> InsightSentryFeed:
        return cls(endpoint=account.endpoint, api_key=account.api_key,
                   series=SeriesSettings.from_options(account.options or {}), **kwargs)

    # -- runner interface ------------------------------------------------------------------
    async def run(self) -> None:
        await self.transport.run()

    def stop(self) -> None:
        self.transport.stop()

    def set_watched(self, codes: Iterable[str]) -> None:
        codes = frozenset(code.strip().upper() for code in codes if code and code.strip())
        if codes == self.codes:
            return
        self.codes = codes
        message, invalid = build_subscribe(api_key=self._api_key, codes=set(codes), series=self.series)
        # Reported in FeedStatus (admin): the instrument's InsightSentry code needs fixing.
        self.status.detail("invalid_codes", invalid)
        for code, reason in invalid.items():
            log.warning("insightsentry: not subscribing %s: %s", code, reason)
        self._frame = json.dumps(message) if message else None
        if self._frame:
            self.transport.send_soon("subscribe", self._frame)
        else:
            self.transport.outbox.discard("subscribe")

    # -- WebSocketSession ------------------------------------------------------------------
    def url(self) -> str:
        return self.endpoint

    def on_open(self, outbox: Outbox) -> None:
        self._fatal_error = None
        if self._frame:
            outbox.offer("subscribe", self._frame)

    def heartbeat(self) -> tuple[str, str]:
        return "ping", "ping"

    def classify(self, ended: LinkEnded) -> Decision:
        return classify(ended, fatal_error=self._fatal_error, hold_off=self.fatal_hold_off)

    async def on_text(self, text: str) -> None:
        items = parse_counted(parse_message, text, status=self.status, name=self.name, received_at=datetime.now(timezone.utc))
        if items is None:
            return
        events: list[Event] = [item for item in items if not isinstance(item, Notice)]
        for notice in (item for item in items if isinstance(item, Notice)):
            self._error(notice.details)
        if events:
            await self.pipeline.submit(events)

    def _error(self, details: dict) -> None:
        error, message = details.get("error", ""), details.get("message", "")
        text = f"provider error {error}" + (f": {message}" if message else "")
        log.warning("insightsentry: %s", text)
        self.status.error(text)
        if error in FATAL_ERRORS:
            self._fatal_error = error  # the link's end is then classified with a long hold-off
