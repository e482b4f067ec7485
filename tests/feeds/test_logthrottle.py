"""feeds/logthrottle.py: the first lines of a window pass, the rest are counted and summarised."""

from __future__ import annotations

import logging

from feeds.logthrottle import LogThrottle


def test_first_burst_per_window_then_a_notice_then_a_summary(caplog):
    now = [0.0]
    throttle = LogThrottle(burst=3, window=60.0, clock=lambda: now[0])
    logger = logging.getLogger("tests.logthrottle")
    with caplog.at_level(logging.WARNING, logger="tests.logthrottle"):
        written = [throttle.log(logger, logging.WARNING, "bad frame %d", n) for n in range(10)]
        assert written == [True] * 3 + [False] * 7
        assert [r.getMessage() for r in caplog.records] == [
            "bad frame 0", "bad frame 1", "bad frame 2",
            "rate-limited: more lines like the above are counted, not logged, for up to 60s"]
        caplog.clear()
        now[0] = 61.0  # a new window: the summary, then the line
        assert throttle.log(logger, logging.WARNING, "bad frame %d", 10)
        assert [r.getMessage() for r in caplog.records] == [
            "7 more lines like the next one were not logged in the last 60s", "bad frame 10"]
