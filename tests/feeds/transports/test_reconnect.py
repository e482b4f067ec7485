"""The one reconnect loop (feeds/transports/reconnect.py), driven by a scripted `connect_once`:
no sockets, no real sleeping. The transports run the same loop against real simulators in
test_websocket.py, tests/feeds/providers/ and tests/feeds/faults/."""

from __future__ import annotations

import random

import pytest

from feeds.backoff import Backoff
from feeds.outbox import SlidingWindow
from feeds.status import MemoryStatus
from feeds.transports.reconnect import LinkEnded, ReconnectLoop, Retry, Stop, always_retry, plan_delay


def policy(seed: int = 3) -> Backoff:
    return Backoff(base=1, cap=60, healthy_after=60, rng=random.Random(seed))


class Script:
    """Hands out one LinkEnded per attempt; stops the loop when the script runs out."""

    def __init__(self, ends: list[LinkEnded]) -> None:
        self.ends = list(ends)
        self.attempts = 0
        self.loop: ReconnectLoop | None = None

    async def __call__(self) -> LinkEnded:
        self.attempts += 1
        ended = self.ends.pop(0)
        if not self.ends:
            self.loop.stop()
        return ended


def make_loop(ends, *, classify=always_retry, backoff=None, **kwargs):
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    status = MemoryStatus()
    loop = ReconnectLoop(name="test", status=status, classify=classify, backoff=backoff or policy(), sleep=sleep,
                         **kwargs)
    script = Script(ends)
    script.loop = loop
    return loop, script, status, delays


# -- plan_delay (pure) ---------------------------------------------------------------------------

def test_plain_retry_is_the_policy():
    backoff, expected = policy(), policy()
    assert [plan_delay(backoff, Retry(), lasted=0.1) for _ in range(5)] == [expected.next_delay() for _ in range(5)]


def test_a_floor_applies_every_time():
    backoff = policy()
    assert all(plan_delay(backoff, Retry(floor=1.0), lasted=0) >= 1.0 for _ in range(20))
    assert plan_delay(policy(), Retry(floor=300), lasted=0) == 300


def test_first_floor_applies_only_after_a_healthy_period():
    backoff, expected = policy(), policy()
    assert plan_delay(backoff, Retry(first_floor=1.0), lasted=0) == max(1.0, expected.next_delay())
    assert plan_delay(backoff, Retry(first_floor=1.0), lasted=0) == expected.next_delay()  # 2nd in a row: bare
    assert plan_delay(backoff, Retry(first_floor=1.0), lasted=61) >= 1.0  # healthy again: the floor is back


def test_now_reconnects_at_once_once_in_a_row_then_follows_the_policy():
    backoff, expected = policy(), policy()
    expected.attempt = 1
    assert plan_delay(backoff, Retry(now=True), lasted=0) == 0.0
    assert plan_delay(backoff, Retry(now=True), lasted=0) == expected.next_delay()


def test_the_policy_resets_only_after_a_healthy_link_not_at_a_handshake():
    backoff = policy()
    for _ in range(5):
        plan_delay(backoff, Retry(), lasted=5)  # handshakes completed, links short-lived
    assert backoff.attempt == 5
    plan_delay(backoff, Retry(), lasted=60)
    assert backoff.attempt == 1  # reset, then this retry counted


# -- the loop ------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_retries_use_the_policy_and_count_reconnects():
    ends = [LinkEnded("closed 1011", close_code=1011)] * 4
    loop, script, status, delays = make_loop(ends)
    assert await loop.run(script) == "stopped"
    expected = policy()
    assert delays == [expected.next_delay() for _ in range(3)]
    assert script.attempts == 4 and status.reconnects == 3
    assert status.states.count("backing_off") == 3 and status.state == "stopped"
    assert status.last_error == "closed 1011"


@pytest.mark.asyncio
async def test_stop_sets_the_classifiers_state_and_error_and_does_not_retry():
    def classify(ended: LinkEnded):
        return Stop("auth_failed", error="closed 1008: Invalid token") if ended.close_code == 1008 else Retry()

    loop, script, status, delays = make_loop([LinkEnded("lost"), LinkEnded("closed 1008", close_code=1008),
                                              LinkEnded("never reached")], classify=classify)
    assert await loop.run(script) == "auth_failed"
    assert script.attempts == 2 and len(delays) == 1
    assert status.state == "auth_failed" and status.last_error == "closed 1008: Invalid token"
    assert isinstance(loop.last[1], Stop)


@pytest.mark.asyncio
async def test_stop_without_an_error_text_reports_the_links():
    loop, script, status, _ = make_loop([LinkEnded("HTTP 406: gzip required", http_status=406), LinkEnded("x")],
                                        classify=lambda e: Stop("refused"))
    assert await loop.run(script) == "refused"
    assert status.last_error == "HTTP 406: gzip required"


@pytest.mark.asyncio
async def test_the_attempt_budget_waits_when_spent():
    clock = [0.0]
    ends = [LinkEnded("refused")] * 12
    loop, script, status, delays = make_loop(ends, backoff=Backoff(base=0, cap=0),
                                             attempts=SlidingWindow(10, 61.0), clock=lambda: clock[0])
    loop._sleep = _advancing(clock, delays)
    await loop.run(script)
    assert script.attempts == 12
    budget_waits = [d for d in delays if d > 1]
    assert budget_waits == [61.0]  # after 10 attempts in the window, one wait for the oldest to expire


def _advancing(clock: list[float], delays: list[float]):
    async def sleep(delay: float) -> None:
        delays.append(delay)
        clock[0] += delay
    return sleep


@pytest.mark.asyncio
async def test_stop_during_a_connection_ends_without_classifying():
    loop, script, status, delays = make_loop([LinkEnded("stopping", close_code=1000)],
                                             classify=lambda e: pytest.fail("classified after stop"))
    assert await loop.run(script) == "stopped" and delays == []
