"""Feed health: what a worker reports about its provider link.

Counters are kept in memory and written to `FeedStatus` about once a second (never once per
message); a state change is written at once, so the admin and health page see it promptly.
Every write stamps `heartbeat_at`: a worker that stops writing (killed, hung loop, database
gone) turns `stale` on the health page (feeds/selectors.py). The same calls move the
Prometheus counters (feeds/metrics.py).

A batch the pipeline cannot store turns a `connected` link `degraded` (with the error) until a
batch is stored again: the link is up, but what arrives is being lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from feeds import metrics
from feeds.broadcast import LayerUnavailable, publish_feed_status

__all__ = ["StatusSink", "MemoryStatus", "FeedStatusReporter"]

log = logging.getLogger(__name__)


class StatusSink(Protocol):
    def message(self) -> None: ...

    def parse_error(self) -> None: ...

    def reconnected(self) -> None: ...

    def detail(self, key: str, value: Any) -> None: ...

    def error(self, text: str) -> None: ...

    async def set_state(self, state: str, *, error: str = "") -> None: ...

    async def store_failed(self, error: str) -> None: ...

    async def store_succeeded(self) -> None: ...


class MemoryStatus:
    """A StatusSink that only remembers (and counts in the metrics): the base of the DB
    reporter and a test double."""

    def __init__(self, *, provider: str = "unknown") -> None:
        self.provider = provider
        self.link_state = "stopped"  # what the transport says
        self.store_failing = False  # the last batch failed to store
        self.state = "stopped"  # what is shown: the link state, or `degraded`
        self.states: list[str] = []  # every state entered, in order
        self.messages = 0
        self.parse_errors = 0
        self.reconnects = 0
        self.last_error = ""
        self.last_message_at: datetime | None = None
        self.details: dict[str, Any] = {}
        self.state_changed = asyncio.Event()
        self._received = metrics.FEED_MESSAGES.labels(provider)
        self._parse_errors = metrics.FEED_PARSE_ERRORS.labels(provider)
        self._reconnects = metrics.FEED_RECONNECTS.labels(provider)

    def message(self) -> None:
        self.messages += 1
        self.last_message_at = datetime.now(timezone.utc)
        self._received.inc()

    def parse_error(self) -> None:
        self.parse_errors += 1
        self._parse_errors.inc()

    def reconnected(self) -> None:
        self.reconnects += 1
        self._reconnects.inc()

    def detail(self, key: str, value: Any) -> None:
        self.details[key] = value

    def error(self, text: str) -> None:
        self.last_error = text

    async def set_state(self, state: str, *, error: str = "") -> None:
        self.link_state = state
        if error:
            self.last_error = error
        await self._enter_state()

    async def store_failed(self, error: str) -> None:
        """The pipeline could not store a batch (`error` is already free of secrets)."""
        self.last_error = error
        if not self.store_failing:
            self.store_failing = True
            await self._enter_state()

    async def store_succeeded(self) -> None:
        if self.store_failing:
            self.store_failing = False
            await self._enter_state()

    async def _enter_state(self) -> None:
        self.state = "degraded" if self.store_failing and self.link_state == "connected" else self.link_state
        self.states.append(self.state)
        if self.state in metrics.FEED_STATES:
            metrics.FEED_STATE.labels(self.provider).state(self.state)
        self.state_changed.set()


class FeedStatusReporter(MemoryStatus):
    """Mirrors a MemoryStatus into the account's `FeedStatus` row."""

    def __init__(self, account_id: int, *, provider: str = "unknown", messages: int = 0, parse_errors: int = 0,
                 reconnects: int = 0) -> None:
        super().__init__(provider=provider)
        self.account_id = account_id
        # Counters continue from what earlier runs of the worker stored.
        self.messages, self.parse_errors, self.reconnects = messages, parse_errors, reconnects

    async def _enter_state(self) -> None:
        await super()._enter_state()
        await self.flush()

    async def flush(self) -> None:
        try:
            status = await sync_to_async(self._write_on_live_connection)()
            await publish_feed_status(status)
        except LayerUnavailable:
            pass  # bounded, and logged once per outage by feeds/broadcast.py; the row is written
        except Exception:  # status is best effort: a DB or Redis hiccup must not stop the feed
            log.exception("could not write feed status for account %s", self.account_id)

    def _write_on_live_connection(self) -> dict:
        # A terminated or restarted database costs one failed write, not every write after it.
        from feeds.db import live_connection

        return live_connection(self._write)()

    def _write(self) -> dict:
        # Imported here: transports import this module, and they must stay importable
        # without Django's app registry (the simulators' tests run without it).
        from feeds.services import feed_status_update

        return feed_status_update(
            account_id=self.account_id,
            state=self.state,
            last_message_at=self.last_message_at,
            messages=self.messages,
            parse_errors=self.parse_errors,
            reconnects=self.reconnects,
            last_error=self.last_error,
            details=dict(self.details),
            heartbeat_at=datetime.now(timezone.utc),
        )

    async def run(self, *, interval: float = 1.0) -> None:
        """Flush every `interval` seconds (one UPDATE, whatever the message rate): also the
        heartbeat, so it must stay well under FEEDS_HEARTBEAT_STALE_SECONDS."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()
