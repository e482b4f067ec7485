"""Feed health: what a worker reports about its provider link.

Counters are kept in memory and written to `FeedStatus` about once a second (never once per
message); a state change is written at once, so the admin and health page see it promptly.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from feeds.broadcast import publish_feed_status

__all__ = ["StatusSink", "MemoryStatus", "FeedStatusReporter"]

log = logging.getLogger(__name__)


class StatusSink(Protocol):
    def message(self) -> None: ...

    def parse_error(self) -> None: ...

    def reconnected(self) -> None: ...

    def detail(self, key: str, value: Any) -> None: ...

    def error(self, text: str) -> None: ...

    async def set_state(self, state: str, *, error: str = "") -> None: ...


class MemoryStatus:
    """A StatusSink that only remembers: the base of the DB reporter and a test double."""

    def __init__(self) -> None:
        self.state = "stopped"
        self.states: list[str] = []  # every state entered, in order
        self.messages = 0
        self.parse_errors = 0
        self.reconnects = 0
        self.last_error = ""
        self.last_message_at: datetime | None = None
        self.details: dict[str, Any] = {}
        self.state_changed = asyncio.Event()

    def message(self) -> None:
        self.messages += 1
        self.last_message_at = datetime.now(timezone.utc)

    def parse_error(self) -> None:
        self.parse_errors += 1

    def reconnected(self) -> None:
        self.reconnects += 1

    def detail(self, key: str, value: Any) -> None:
        self.details[key] = value

    def error(self, text: str) -> None:
        self.last_error = text

    async def set_state(self, state: str, *, error: str = "") -> None:
        self.state = state
        self.states.append(state)
        if error:
            self.last_error = error
        self.state_changed.set()


class FeedStatusReporter(MemoryStatus):
    """Mirrors a MemoryStatus into the account's `FeedStatus` row."""

    def __init__(self, account_id: int, *, messages: int = 0, parse_errors: int = 0, reconnects: int = 0) -> None:
        super().__init__()
        self.account_id = account_id
        # Counters continue from what earlier runs of the worker stored.
        self.messages, self.parse_errors, self.reconnects = messages, parse_errors, reconnects

    async def set_state(self, state: str, *, error: str = "") -> None:
        await super().set_state(state, error=error)
        await self.flush()

    async def flush(self) -> None:
        try:
            status = await sync_to_async(self._write)()
            await publish_feed_status(status)
        except Exception:  # status is best effort: a DB or Redis hiccup must not stop the feed
            log.exception("could not write feed status for account %s", self.account_id)

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
        )

    async def run(self, *, interval: float = 1.0) -> None:
        """Flush every `interval` seconds (one UPDATE, whatever the message rate)."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()
