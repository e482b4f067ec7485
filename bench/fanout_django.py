"""The Django side of bench/fanout.py: each runs in a subprocess (`python bench/fanout.py _prepare|_publish`),
with the measured checkout first on sys.path (fanout.main puts it there)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime, timezone

from _common import login_session, percentile, proc_cpu_seconds


def bench_event(seq: int, stamp_ns: int, instrument_id: int, symbol: str):
    """The event both publishers send: a realistic StockNews item (~620 bytes as event text) whose
    external_id carries the sequence number and the publisher's CLOCK_MONOTONIC stamp."""
    from feeds.events import News

    now = datetime.now(timezone.utc)
    return News(
        provider="stocknews", code=symbol, received_at=now, instrument_id=instrument_id, symbol=symbol,
        external_id=f"bench:{seq}:{stamp_ns}", published_at=now, category="Earnings", source="StockNews.live",
        headline=f"{symbol} climbs as services revenue beats estimates",
        summary="Services revenue beat estimates; handset sales in China stabilised.",
        url="https://stocknews.example/n/88412", sentiment=62.0, raw_sentiment="0.62",
        sentiment_label="Positive", confidence=81.0, key_factors=("services beat", "China demand stable"),
        price=227.48,
    )


def event_text(event) -> str:
    """The exact text Tickerwire sends for `event` (seq 1 of its instrument's stream)."""
    from feeds.broadcast import event_body, event_stream
    from feeds.livestore import event_frame_text

    return event_frame_text(event_stream(event), "bench000", 1, event_body(event))


def prepare() -> int:
    """Migrate and seed the template database, log alice in; print what the steps need."""
    import django

    django.setup()
    from django.core.management import call_command

    from dashboard.models import Instrument, Watchlist

    call_command("migrate", "--noinput", verbosity=0)
    call_command("seed_demo", stdout=open(os.devnull, "w"))
    session_key, user = login_session("alice")
    watchlist = Watchlist.objects.filter(team__memberships__user=user).order_by("id").first()
    instrument = watchlist.items.first().instrument
    unwatched = Instrument.objects.exclude(watchlist_items__isnull=False).order_by("id").first()
    text = event_text(bench_event(0, time.monotonic_ns(), instrument.id, instrument.symbol))
    print(json.dumps({"type": "prepared", "session_key": session_key, "watchlist": watchlist.id,
                      "instrument_id": instrument.id, "symbol": instrument.symbol,
                      "warmup_instrument_id": unwatched.id if unwatched else None, "event_bytes": len(text.encode())}),
          flush=True)
    return 0


async def publish(args: argparse.Namespace) -> None:
    """Wait for {"cmd":"go","rate":r,"count":m}, then send m events at t0 + i/r, one await at a time."""
    import django

    django.setup()
    from feeds.broadcast import publish_events

    instrument, symbol = args.instrument_id, args.symbol
    if args.mode == "raw":
        import redis.asyncio as aioredis

        redis = aioredis.from_url(args.redis_url)
        await redis.ping()

        async def send(event) -> None:
            await redis.publish(args.channel, event_text(event))
    else:
        async def send(event) -> None:
            await publish_events([event])

        if args.warmup_instrument_id:  # opens the layer's Redis pool on a group nobody watches
            await send(bench_event(-1, time.monotonic_ns(), args.warmup_instrument_id, "WARM"))
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(json.dumps({"type": "ready"}), flush=True)
    line = await stdin.readline()
    if not line:
        return
    go = json.loads(line)
    rate, count = float(go["rate"]), int(go["count"])
    errors, lags = 0, []
    t0 = time.monotonic() + 0.05
    cpu0 = proc_cpu_seconds(os.getpid())
    for seq in range(count):
        due = t0 + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = time.monotonic_ns()
        lags.append(stamp / 1e9 - due)
        try:
            await send(bench_event(seq, stamp, instrument, symbol))
        except Exception as exc:  # noqa: BLE001 - counted and reported; the schedule goes on
            errors += 1
            if errors <= 3:
                print(f"publish failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    end = time.monotonic()
    lags.sort()
    print(json.dumps({"type": "published", "sent": count - errors, "errors": errors, "t0_ns": int(t0 * 1e9),
                      "seconds": end - t0, "achieved_rate": count / (end - t0 + 1 / rate),
                      "lag_ms": {"p50": percentile(lags, 50) * 1e3, "p99": percentile(lags, 99) * 1e3,
                                 "max": lags[-1] * 1e3},
                      "cpu_seconds": proc_cpu_seconds(os.getpid()) - cpu0}), flush=True)
