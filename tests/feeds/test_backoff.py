from __future__ import annotations

import random

from feeds.backoff import Backoff


def test_full_jitter_within_exponential_ceiling_and_cap():
    backoff = Backoff(base=1, cap=60, rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(60, 2**attempt)
        assert backoff.ceiling() == ceiling
        assert 0 <= backoff.next_delay() <= ceiling


def test_short_connections_do_not_reset_the_policy():
    backoff = Backoff(base=1, cap=60, healthy_after=60, rng=random.Random(1))
    for _ in range(5):
        backoff.connection_ended(lasted=0.01)  # accepted, then closed at once
        backoff.next_delay()
    assert backoff.attempt == 5 and backoff.ceiling() == 32


def test_a_healthy_period_resets_the_policy():
    backoff = Backoff(base=1, cap=60, healthy_after=60, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.connection_ended(lasted=61)
    assert backoff.attempt == 0 and backoff.ceiling() == 1


def test_hold_off_sets_a_floor_for_the_next_delay_only():
    backoff = Backoff(base=1, cap=60, rng=random.Random(1))
    backoff.hold_off(300)
    assert backoff.next_delay() == 300
    assert backoff.next_delay() <= 2
