"""The board's add box at catalogue scale: `instrument_search` over 10,000 instruments finds symbol,
name and name-word prefixes in any case, ranks them, and costs one query (bench/search.py times it;
tests never assert time). On PostgreSQL the query must be one migration 0010's indexes serve."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench.search import seed_instruments
from dashboard.selectors import instrument_search
from feeds.models import Instrument

pytestmark = pytest.mark.django_db
INSTRUMENTS = 10_000


@pytest.fixture(scope="module")
def catalogue(django_db_setup, django_db_blocker) -> Iterator[list[tuple[str, str]]]:
    """Seeded once for the module and committed (every test here only reads), then deleted and
    vacuumed: rolling 10,000 rows back after each test left hundreds of thousands of dead rows and
    index entries behind, and later tests that walk the instruments (retention) crawled through them."""
    with django_db_blocker.unblock():
        assert seed_instruments(INSTRUMENTS) == INSTRUMENTS
        rows = list(Instrument.objects.values_list("symbol", "name"))
    yield rows
    with django_db_blocker.unblock():
        Instrument.objects.all().delete()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # autocommit here: VACUUM cannot run in a transaction
                cursor.execute("VACUUM ANALYZE feeds_instrument")


def expected(catalogue: list[tuple[str, str]], query: str, limit: int = 20) -> list[str]:
    """The rule, written plainly: exact symbol, symbol prefix, name prefix, then name words (from two
    characters on), each group by symbol. Name words: on PostgreSQL each word of the query starts a
    word of the name, in any order; on SQLite the query follows a space in the name."""
    q = " ".join(query.split()).upper()
    query_words = re.findall(r"[A-Z0-9]+", q)

    def by_word(name: str) -> bool:
        if connection.vendor != "postgresql":
            return f" {q}" in name
        words = re.findall(r"[A-Z0-9]+", name)
        return bool(query_words) and all(any(w.startswith(part) for w in words) for part in query_words)

    def rank(symbol: str, name: str) -> int | None:
        name = name.upper()
        if symbol == q:
            return 0
        if symbol.startswith(q):
            return 1
        if name.startswith(q):
            return 2
        if len(q) > 1 and by_word(name):
            return 3
        return None

    ranked = sorted((r, symbol) for symbol, name in catalogue if (r := rank(symbol, name)) is not None)
    return [symbol for _, symbol in ranked[:limit]]


@pytest.mark.parametrize("query", ["AAPL", "aapl", "app", "chase", "ms", "a", "summit", "Pinnacle Ca", "holdings summit", "zzqx"])
def test_results_follow_the_rule_in_one_query_at_10000_instruments(catalogue, query):
    with CaptureQueriesContext(connection) as queries:
        found = instrument_search(query=query)
    assert len(queries) == 1
    assert [row["symbol"] for row in found] == expected(catalogue, query)


def test_the_add_box_finds_names_by_prefix_and_by_word(catalogue):
    symbols = lambda query: [row["symbol"] for row in instrument_search(query=query)]  # noqa: E731
    assert symbols("aapl")[0] == "AAPL"
    assert "AAPL" in symbols("app")  # Apple Inc.
    assert "JPM" in symbols("chase")  # JPMorgan Chase & Co.
    assert "EL" in symbols("estée")  # The Estée Lauder Companies Inc.
    assert symbols("  general   mills ") == ["GIS"]
    assert len(symbols("summit")) == 20  # limited, however many match
    assert instrument_search(query="JPM")[0] == {"id": Instrument.objects.get(symbol="JPM").pk, "symbol": "JPM",
                                                 "name": "JPMorgan Chase & Co.", "exchange": "NYSE"}


def test_nothing_to_search_runs_no_query_and_operators_in_the_query_are_only_text(catalogue):
    with CaptureQueriesContext(connection) as queries:
        assert instrument_search(query="   ") == []
    assert len(queries) == 0
    for query in ("a & b", "!chase", "chase:*", "'", "\\", "%", "_", "(jp | m)"):
        instrument_search(query=query)  # must not raise (a raw tsquery syntax error would)
    assert instrument_search(query="%") == [] and instrument_search(query="_") == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the search indexes are PostgreSQL's")
@pytest.mark.parametrize("query, index", [("AAPL", "instrument_symbol_prefix"), ("Apple I", "instrument_name_prefix"),
                                          ("chase", "instrument_name_words")])
def test_postgresql_answers_from_the_search_indexes(catalogue, query, index):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE feeds_instrument")
    with CaptureQueriesContext(connection) as queries:
        instrument_search(query=query)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + queries.captured_queries[0]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Index Scan on {index}" in plan, plan
    assert "Seq Scan" not in plan, plan
