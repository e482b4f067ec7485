"""Search benchmark: the board's add box (`/api/instruments/?q=`) at 10,000 instruments.

Builds a throw-away database as bench/pages.py does (a temporary SQLite file by default;
`--database-url postgres://…` makes a fresh PostgreSQL database on that server and drops it), imports
the shipped catalogue (feeds/catalogue/us_listings.csv) and made-up listings up to `--instruments`
through the catalogue import itself, then requests each query in-process with a logged-in
django.test.Client: once to warm up, once with its queries counted, then `--repeat` times timed.
Prints server time p50/p95 per query, the plan PostgreSQL chose, and writes JSON to
bench/results/search-<UTC time>.json.

    python bench/search.py
    python bench/search.py --database-url postgres://tickerwire@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.pages import _percentile, settle, throwaway_django  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MAX_INSTRUMENTS = 50_000
MAX_REPEAT = 1000
# (what it exercises, query): broad and narrow, each kind of match, and a miss.
QUERIES = [
    ("one letter", "a"),
    ("exact symbol", "AAPL"),
    ("symbol prefix", "MS"),
    ("name prefix", "app"),
    ("name word", "chase"),
    ("two words", "general m"),
    ("no match", "zzqx"),
]
HEADER = "symbol,name,exchange,insightsentry_code,knowsis_channel,stocktwits_symbol,stocknews_ticker\n"
_WORDS = ("Atlas Beacon Cedar Delta Ember Falcon Granite Harbor Iron Juniper Keystone Lumen Meridian Northern Orion "
          "Pioneer Quarry Summit Redwood Sterling Tidewater Union Vanguard Willow Apex Crescent Evergreen Frontier "
          "Horizon Liberty Pinnacle Riverstone Silverline Trident").split()
_KINDS = ("Holdings", "Therapeutics", "Energy", "Financial", "Systems", "Industries", "Logistics", "Semiconductor",
          "Bancorp", "Realty", "Foods", "Networks", "Biosciences", "Materials", "Capital")
_SUFFIXES = ("Inc.", "Corporation", "Co.", "Ltd.", "plc", "Group", "Trust")


def made_up_listings(count: int, *, taken: set[str], seed: int = 13) -> str:
    """`count` CSV lines of plausible listings whose symbols are not in `taken` (deterministic)."""
    rng, lines, symbols = random.Random(seed), [], set(taken)
    while len(lines) < count:
        symbol = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 5)))
        if symbol in symbols:
            continue
        symbols.add(symbol)
        name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_KINDS)} {rng.choice(_SUFFIXES)}"
        exchange = rng.choice(("NASDAQ", "NYSE"))
        lines.append(f"{symbol},{name},{exchange},{exchange}:{symbol},{symbol.lower()}-{len(lines)},{symbol},{symbol}\n")
    return "".join(lines)


def seed_instruments(total: int) -> int:
    """Import the shipped catalogue, then made-up listings until `total` instruments are stored."""
    from feeds.catalogue import SHIPPED, instrument_catalogue_import
    from feeds.models import Instrument

    report = instrument_catalogue_import(data=SHIPPED.read_bytes())
    assert not report.errors, report.errors
    taken = set(Instrument.objects.values_list("symbol", flat=True))
    missing = total - len(taken)
    if missing > 0:
        report = instrument_catalogue_import(data=(HEADER + made_up_listings(missing, taken=taken)).encode())
        assert not report.errors, report.errors[:5]
    return Instrument.objects.count()


def plan(query: str) -> str:
    """PostgreSQL's plan for the search's one query (EXPLAIN ANALYZE), empty elsewhere."""
    from django.db import connection

    from dashboard.selectors import instrument_search

    if connection.vendor != "postgresql":
        return ""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        instrument_search(query=query)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + captured.captured_queries[-1]["sql"])
        return "\n".join(row[0] for row in cursor.fetchall())


def measure(*, repeat: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from dashboard.selectors import instrument_search

    user, _ = get_user_model().objects.get_or_create(username="bench-search")
    client = Client()
    client.force_login(user)
    rows = []
    for what, query in QUERIES:
        path = f"/api/instruments/?q={query.replace(' ', '+')}"
        client.get(path)  # warm-up
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        count = len(queries)  # now: the next request clears the connection's query log
        times, selector = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            instrument_search(query=query)
            selector.append((time.perf_counter() - started) * 1000)
        found = response.json()["instruments"]
        rows.append({"query": query, "what": what, "status": response.status_code, "queries": count,
                     "results": len(found), "first": found[0]["symbol"] if found else "",
                     "p50_ms": round(statistics.median(times), 2), "p95_ms": round(_percentile(times, 0.95), 2),
                     "selector_p50_ms": round(statistics.median(selector), 2),
                     "selector_p95_ms": round(_percentile(selector, 0.95), 2), "plan": plan(query)})
    return rows


def report(rows: list[dict], *, vendor: str, instruments: int, repeat: int, out: Path, show_plans: bool) -> Path:
    print(f"{vendor}, {instruments:,} instruments, {repeat} timed requests per query: p50/p95 of the whole request"
          " in-process (session, user, search, JSON), then of the search selector alone (its one query)")
    header = (f"{'query':<12} {'what':<14} {'queries':>7} {'results':>7} {'first':<6} {'p50 ms':>7} {'p95 ms':>7}"
              f" {'search p50':>10} {'search p95':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['query']:<12} {r['what']:<14} {r['queries']:>7} {r['results']:>7} {r['first']:<6} "
              f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['selector_p50_ms']:>10.2f} {r['selector_p95_ms']:>10.2f}")
        if show_plans and r["plan"]:
            print("    " + r["plan"].replace("\n", "\n    "))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"search-{stamp}.json"
    path.write_text(json.dumps({"created": stamp, "database": vendor, "instruments": instruments, "repeat": repeat,
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=10_000, help="how many instruments to store")
    parser.add_argument("--repeat", type=int, default=100, help="timed requests per query")
    parser.add_argument("--database-url", default="", help="postgres://…: a fresh PostgreSQL database on that "
                                                           "server, dropped afterwards (default: a temporary SQLite file)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--plans", action="store_true", help="print PostgreSQL's plan under each query")
    args = parser.parse_args(argv)
    if not 1 <= args.instruments <= MAX_INSTRUMENTS:
        parser.error(f"--instruments: between 1 and {MAX_INSTRUMENTS}")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat: between 1 and {MAX_REPEAT}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from django.conf import settings

    # Inside a process that has configured Django (a test): its database, in its transaction.
    with nullcontext() if settings.configured else throwaway_django(args.database_url or None):
        from django.db import connection

        stored = seed_instruments(args.instruments)
        settle()
        rows = measure(repeat=args.repeat)
        report(rows, vendor=connection.vendor, instruments=stored, repeat=args.repeat, out=args.out,
               show_plans=args.plans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
