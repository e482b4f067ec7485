"""The SSE decoder against the WHATWG examples, awkward chunk splits, bare JSON and the size cap."""

from __future__ import annotations

import random

import pytest

from feeds.transports.sse_decoder import SseDecoder, SseEvent


def decode(text: str, *, chunks: int = 1, seed: int = 0, **kwargs) -> tuple[list[SseEvent], SseDecoder]:
    decoder = SseDecoder(**kwargs)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), min(chunks - 1, len(text) - 1))) if chunks > 1 else []
    events: list[SseEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)]):
        events.extend(decoder.feed(text[start:end]))
    return events, decoder


# WHATWG HTML, "Interpreting an event stream", examples.
def test_whatwg_stock_ticker_example():
    events, decoder = decode("data: YHOO\ndata: +2\ndata: 10\n\n")
    assert events == [SseEvent(data="YHOO\n+2\n10")]


def test_whatwg_four_blocks_example():
    text = ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    events, _ = decode(text)
    assert [e.data for e in events] == ["first event", "second event", " third event"]
    assert [e.id for e in events] == ["1", "", ""]


def test_whatwg_two_events_example():
    events, _ = decode("data\n\ndata\ndata\n\ndata:")
    # "The first block fires events with the data set to the empty string [...] The middle block
    # fires an event with the data set to a single newline character." The last is never finished.
    assert [e.data for e in events] == ["", "\n"]


def test_whatwg_space_example():
    events, _ = decode("data:test\n\ndata: test\n\n")
    assert [e.data for e in events] == ["test", "test"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_and_line_ending_gives_the_same_events(newline, seed):
    text = newline.join([": keep-alive", "", 'data: {"a": 1}', "", "event: custom", "data: x", "data: y", "", '{"bare": 2}', ""]) + newline
    events, _ = decode(text, chunks=12, seed=seed)
    assert [(e.event, e.data) for e in events] == [("message", '{"a": 1}'), ("custom", "x\ny"), ("message", '{"bare": 2}')]


def test_oversized_event_is_dropped_counted_and_the_stream_goes_on():
    big = "data: " + "x" * 2000 + "\n\n"
    events, decoder = decode(big + "data: small\n\n" + "y" * 3000 + "\n\ndata: after\n\n", chunks=30, max_event_bytes=1000)
    assert [e.data for e in events] == ["small", "after"]
    assert decoder.oversized == 2
