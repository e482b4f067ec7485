"""The one reconnect loop every transport runs (WebSocket, SSE, Pusher).

A transport supplies `connect_once()`: make one connection, serve it until it ends, and say how
it ended as a `LinkEnded` (close code, HTTP status, or an error text; how long it was up). A
provider supplies a *classifier*: a pure function `LinkEnded -> Retry | Stop`, the shape of
websockets' `process_exception` (None = retry, an exception = give up), extended with what a
feed needs: a floor for the next delay, "reconnect at once", and the FeedStatus state to stop in.

The loop owns everything else, once: the connection-attempt budget, `status.reconnected()`,
the `connecting`/`backing_off`/`stopped` states, the delay from `Backoff` (reset only after a
healthy period, never at a handshake: see feeds/backoff.py), and an interruptible sleep.

Why not websockets' own `async for ws in connect(...)`: its backoff resets at every handshake,
so a server that accepts and then closes is retried in a tight loop; and SSE and Pusher links
need the same policy, which it cannot give them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from feeds.backoff import Backoff
from feeds.outbox import SlidingWindow
from feeds.status import StatusSink

__all__ = ["LinkEnded", "Retry", "Stop", "Decision", "Classifier", "ReconnectLoop", "plan_delay", "always_retry",
           "describe_close"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkEnded:
    """How one connection (or attempt) ended, in transport-neutral terms."""

    error: str  # for the log and FeedStatus; already free of secrets
    close_code: int | None = None  # WebSocket close code (Pusher: close code or pusher:error 4xxx)
    http_status: int | None = None  # refused at the handshake / request with this status
    reason: str = ""  # the close reason as received (e.g. StockNews' JSON in a 1008)
    lasted: float = 0.0  # seconds the link was up; 0 when it never was


@dataclass(frozen=True)
class Retry:
    """Reconnect after a delay from the policy.

    `floor`: the delay is at least this, every time (Pusher 4100-4199: >= 1 s; InsightSentry
    after a fatal error: 5 minutes). `first_floor`: at least this only on the first retry after a
    healthy period. `now`: reconnect at once if the last link was healthy (once in a row);
    a repeat goes through the policy.
    """

    floor: float = 0.0
    first_floor: float = 0.0
    now: bool = False


@dataclass(frozen=True)
class Stop:
    """Do not reconnect: a person must act. `state` is the FeedStatus state (`auth_failed`,
    `refused`; the worker exits with code 3); `error` replaces the LinkEnded text if given."""

    state: str
    error: str | None = None


Decision = Retry | Stop
Classifier = Callable[[LinkEnded], Decision]
Sleep = Callable[[float], Awaitable[None]]


def always_retry(ended: LinkEnded) -> Decision:
    """Every end is transient: back off and reconnect."""
    return Retry()


def describe_close(code: int | None, reason: str) -> str:
    return f"closed {code}{': ' + reason if reason else ''}"


def plan_delay(backoff: Backoff, decision: Retry, *, lasted: float) -> float:
    """The delay before the next attempt (pure apart from the policy's own state and RNG)."""
    backoff.connection_ended(lasted=lasted)  # a healthy link resets the policy; a short one never
    if decision.now and backoff.attempt == 0:
        backoff.attempt += 1  # "reconnect now" once; a repeat in a row goes through the policy
        return 0.0
    floor = max(decision.floor, decision.first_floor if backoff.attempt == 0 else 0.0)
    if floor:
        backoff.hold_off(floor)
    return backoff.next_delay()


class ReconnectLoop:
    def __init__(
        self,
        *,
        name: str,
        status: StatusSink,
        classify: Classifier = always_retry,
        backoff: Backoff | None = None,
        attempts: SlidingWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        self.name = name
        self.status = status
        self.classify = classify
        self.backoff = backoff or Backoff()
        self.attempts = attempts  # connection attempts allowed per window (None: no budget)
        self._clock = clock
        self._sleep = sleep or self._interruptible_sleep
        self._stop = asyncio.Event()
        self.last: tuple[LinkEnded, Decision] | None = None  # for tests and logs

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, connect_once: Callable[[], Awaitable[LinkEnded]]) -> str:
        """Connect and reconnect until stopped or a classifier says stop; returns the final state."""
        first = True
        while not self._stop.is_set():
            if self.attempts is not None:
                wait = self.attempts.wait_time(self._clock())
                if wait > 0:
                    log.info("%s: connection attempt budget spent, waiting %.1fs", self.name, wait)
                    await self._sleep(wait)
                    continue
                self.attempts.record(self._clock())
            if not first:
                self.status.reconnected()
            first = False
            ended = await connect_once()
            if self._stop.is_set():
                break
            decision = self.classify(ended)
            self.last = (ended, decision)
            if isinstance(decision, Stop):
                error = decision.error or ended.error
                log.error("%s: refused by the provider (%s); not reconnecting", self.name, error)
                await self.status.set_state(decision.state, error=error)
                return decision.state
            delay = plan_delay(self.backoff, decision, lasted=ended.lasted)
            log.warning("%s: %s; reconnecting in %.2fs", self.name, ended.error, delay)
            await self.status.set_state("backing_off", error=ended.error)
            await self._sleep(delay)
        await self.status.set_state("stopped")
        return "stopped"

    async def _interruptible_sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        except TimeoutError:
            pass
