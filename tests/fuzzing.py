"""Hypothesis strategies for hostile wire input, shared by the parser and webhook fuzz tests.

Two kinds of input find different bugs: arbitrary values (wrong types everywhere, huge and
non-finite numbers, odd text) and the documented payloads with parts of them swapped for such
values, which reach the branches deep inside a parser that random JSON never gets past.
Bounded on purpose (`FUZZ`): the whole fuzz set runs in about 20 s on two shared cores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from feeds.events import Event
from feeds.providers.base import UnsupportedMessage

# No example database: it would write .hypothesis/ into a working tree several people share.
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Numbers a parser must survive: past 64 bits, past a float (OverflowError on float()), past
# Python's 4,300-digit str<->int limit, and the non-finite floats json.loads accepts.
AWKWARD_NUMBERS = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -(10**4000), 1e308, -1e308, 5e-324,
                                   math.inf, -math.inf, math.nan, 0, -0.0, 253402300800, -62135596801])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), AWKWARD_NUMBERS,
    st.text(max_size=20), st.sampled_from(["", "1e999", "NaN", "-inf", "0x10", "13.6100", "2016-06-23T11:34:00",
                                           "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00", "\x00",
                                           "\ud800", "NASDAQ:AAPL", "alert", "High"]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated(draw, value: Any) -> Any:
    """`value` (a documented payload) with keys dropped, added, or given any value, at any depth."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            action = draw(st.integers(0, 7))
            if action == 0:
                continue  # the field is missing
            out[key] = draw(JSON_VALUES) if action == 1 else draw(mutated(item))
        if draw(st.integers(0, 7)) == 0:
            out[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        return out
    if isinstance(value, list):
        return [draw(mutated(item)) for item in value] + draw(st.lists(JSON_VALUES, max_size=2))
    return draw(JSON_VALUES) if draw(st.integers(0, 3)) == 0 else value


def dumps(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity as JavaScript literals: json.loads reads them back


def nested(depth: int, *, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


# Deeper than json.loads' recursion limit: it raises RecursionError, which is no ValueError.
DEEP_TEXT = st.integers(900, 50_000).flatmap(lambda n: st.sampled_from([
    nested(n), '{"a":' * n + "1" + "}" * n, '{"data":' + nested(n) + "}", nested(n)[: n + 3]]))


def raw_frames(*documented: Any) -> st.SearchStrategy[str]:
    """Text frames: any text, deep nesting, huge number literals, and mutated documented payloads."""
    return st.one_of(
        st.text(max_size=50), DEEP_TEXT, st.sampled_from(["1" * 5000, "-1e999", "[1e400]", '{"a": NaN}', "pong", ""]),
        JSON_VALUES.map(dumps), *(mutated(doc).map(dumps) for doc in documented),
    )


def assert_publishable(events: list) -> None:
    """What a parser returns can be published: strict JSON (no NaN/Infinity a browser rejects)."""
    for event in events:
        if isinstance(event, Event):
            json.dumps(event.to_message(), allow_nan=False)


def assert_parses_or_skips(parse: Callable[..., list], *args: Any, **kwargs: Any) -> None:
    """The fuzzing contract of every parser: publishable events, or the one "skip and count"
    exception (UnsupportedMessage); anything else escapes and fails the test."""
    try:
        events = parse(*args, **kwargs)
    except UnsupportedMessage:
        return
    assert_publishable(events)
