"""StockTwits Firehose sentiment over the reconnecting SSE loop.

Wire reference: ../shared/providers/stocktwits-firehose.md. Basic auth; gzip required (406
otherwise); `?seq_id=` resumes within 24 h. The position we resume from is the one committed
with the stored messages (`StreamCursor`): before every reconnect the pipeline is drained and
the cursor re-read, so a resume never skips a message that was received but not stored, and
the unique key on (message, symbol) absorbs the overlap. 401 stops (credentials), 406 stops
(our bug), 503 and anything else back off and retry.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from asgiref.sync import sync_to_async

from feeds.backoff import Backoff
from feeds.db import live_connection
from feeds.pipeline import Pipeline
from feeds.providers.base import parse_counted
from feeds.status import StatusSink
from feeds.transports.reconnect import Decision, LinkEnded, Retry, Stop
from feeds.transports.sse import ReconnectingSse, SseRequest

from .parse import PROVIDER, parse_message

__all__ = ["StockTwitsFeed", "classify"]

log = logging.getLogger(__name__)


def classify(ended: LinkEnded) -> Decision:
    """401: credentials refused, a person must fix them (auth_failed). 406: our request is wrong
    (no gzip), a client bug a retry cannot fix (refused). 503, any other status, a cut or a
    timeout: back off and reconnect, resuming from the stored cursor (see `request`)."""
    if ended.http_status == 401:
        return Stop("auth_failed")
    if ended.http_status == 406:
        return Stop("refused")
    return Retry()


@live_connection  # re-read after every cut, database hiccups included
def stored_cursor() -> str | None:
    from feeds.models import StreamCursor

    return StreamCursor.objects.filter(provider=PROVIDER).values_list("position", flat=True).first()


class StockTwitsFeed:
    name = PROVIDER
    # Resumes from the cursor stored with its data: a standby needs no connection of its own
    # before it takes over (feeds/runner.py).
    resumable = True

    def __init__(
        self,
        *,
        endpoint: str,
        username: str,
        password: str,
        pipeline: Pipeline,
        status: StatusSink,
        backoff: Backoff | None = None,
        **transport_kwargs,
    ) -> None:
        self.endpoint = endpoint
        self._auth = (username, password)
        self.pipeline = pipeline
        self.status = status
        self.cursor: str | None = None
        self.transport = ReconnectingSse(
            self, status=status, backoff=backoff or Backoff(base=1.0, cap=60.0, healthy_after=60.0), **transport_kwargs
        )

    @classmethod
    def from_account(cls, account, **kwargs) -> StockTwitsFeed:
        return cls(endpoint=account.endpoint, username=account.username, password=account.password, **kwargs)

    # -- runner interface ------------------------------------------------------------------
    async def run(self) -> None:
        await self.transport.run()

    def stop(self) -> None:
        self.transport.stop()

    def set_watched(self, codes) -> None:
        """The firehose sends every symbol; what is watched only decides what gets published."""

    # -- SseSession ------------------------------------------------------------------------
    async def request(self) -> SseRequest:
        await self.pipeline.wait_idle()  # everything received so far is stored (or failed)
        self.cursor = await sync_to_async(stored_cursor)()
        self.status.detail("cursor", self.cursor)
        params = {"seq_id": self.cursor} if self.cursor else {}
        return SseRequest(url=self.endpoint, params=params, auth=self._auth)

    def classify(self, ended: LinkEnded) -> Decision:
        return classify(ended)

    async def on_event(self, data: str) -> None:
        posts = parse_counted(parse_message, data, status=self.status, name=self.name, received_at=datetime.now(timezone.utc))
        if posts:
            self.status.detail("last_seq_id", posts[-1].cursor)
            # One submit per message: its rows are stored in one transaction with its cursor.
            await self.pipeline.submit(posts)
