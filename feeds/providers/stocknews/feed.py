"""StockNews.live over the reconnecting WebSocket loop.

Wire reference: ../shared/providers/stocknews-websocket.md. Token in the query string;
`{"type":"ping"}` every 30 s (the doc asks for no more than one per 3 s); `subscribe` with the
union of watched tickers, coalesced so the documented client limits always hold (10 subscribe,
20 ping, 30 messages in all per minute); close 1008 means the token or subscription was
refused: stop and report, never reconnect by ourselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from feeds.backoff import Backoff
from feeds.events import Event
from feeds.outbox import TOTAL, Outbox
from feeds.pipeline import Pipeline
from feeds.providers.base import Notice, parse_counted
from feeds.status import StatusSink
from feeds.transports.reconnect import Decision, LinkEnded, Retry, Stop
from feeds.transports.websocket import ReconnectingWebSocket, WebSocketOptions

from .parse import PROVIDER, parse_close_reason, parse_message

__all__ = ["StockNewsFeed", "CLIENT_LIMITS", "classify"]

log = logging.getLogger(__name__)

CLIENT_LIMITS = {"subscribe": 10, "ping": 20, TOTAL: 30}
PING_FRAME = json.dumps({"type": "ping"})


def subscribe_frame(tickers: Iterable[str]) -> str:
    return json.dumps({"type": "subscribe", "tickers": sorted(tickers)})


def classify(ended: LinkEnded) -> Decision:
    """Close 1008 = token or subscription refused: stop (auth_failed), never reconnect by
    ourselves. Anything else (other closes, cuts, timeouts, handshake statuses) backs off."""
    if ended.close_code == 1008:
        detail = parse_close_reason(ended.reason)
        words = ": ".join(str(detail[k]) for k in ("error", "message") if detail.get(k)) or "policy violation"
        if detail.get("expiresAt"):
            words += f" (expired {detail['expiresAt']})"
        return Stop("auth_failed", error=f"closed 1008: {words}")
    return Retry()


class StockNewsFeed:
    name = PROVIDER

    def __init__(
        self,
        *,
        endpoint: str,
        token: str,
        pipeline: Pipeline,
        status: StatusSink,
        options: WebSocketOptions | None = None,
        backoff: Backoff | None = None,
        **transport_kwargs,
    ) -> None:
        self.endpoint = endpoint
        self._token = token
        self.pipeline = pipeline
        self.status = status
        self.tickers: frozenset[str] = frozenset()
        self.transport = ReconnectingWebSocket(
            self,
            Outbox(CLIENT_LIMITS, priority=("subscribe", "ping")),
            status=status,
            options=options or WebSocketOptions(heartbeat_interval=30.0),
            backoff=backoff or Backoff(base=1.0, cap=60.0, healthy_after=60.0),
            **transport_kwargs,
        )

    @classmethod
    def from_account(cls, account, **kwargs) -> StockNewsFeed:
        return cls(endpoint=account.endpoint, token=account.token, **kwargs)

    # -- runner interface ------------------------------------------------------------------
    async def run(self) -> None:
        await self.transport.run()

    def stop(self) -> None:
        self.transport.stop()

    def set_watched(self, codes: Iterable[str]) -> None:
        """Follow the watched set; only a change sends a new (coalesced) subscribe."""
        tickers = frozenset(code.upper() for code in codes if code)
        if tickers == self.tickers:
            return
        self.tickers = tickers
        if tickers:
            self.transport.send_soon("subscribe", subscribe_frame(tickers))
        else:
            # The protocol has no unsubscribe; with nothing watched, unmatched news is
            # simply not stored (the pipeline resolves only known instruments).
            self.transport.outbox.discard("subscribe")

    # -- WebSocketSession ------------------------------------------------------------------
    def url(self) -> str:
        parts = urlsplit(self.endpoint)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", self._token)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def on_open(self, outbox: Outbox) -> None:
        if self.tickers:
            outbox.offer("subscribe", subscribe_frame(self.tickers))

    def heartbeat(self) -> tuple[str, str]:
        return "ping", PING_FRAME

    def classify(self, ended: LinkEnded) -> Decision:
        return classify(ended)

    async def on_text(self, text: str) -> None:
        items = parse_counted(parse_message, text, status=self.status, name=self.name, received_at=datetime.now(timezone.utc))
        if items is None:
            return
        events: list[Event] = []
        for item in items:
            if isinstance(item, Notice):
                self._notice(item)
            else:
                events.append(item)
        if events:
            await self.pipeline.submit(events)

    def _notice(self, notice: Notice) -> None:
        if notice.kind == "connected":
            self.status.detail("subscription_expires_at", notice.details.get("expires_at"))
            self.status.detail("subscription_active", notice.details.get("active"))
        elif notice.kind == "error":
            text = ": ".join(v for v in (notice.details.get("error"), notice.details.get("message")) if v)
            log.warning("stocknews: provider reported an error: %s", text)
            self.status.error(text)
