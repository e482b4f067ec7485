"""The instrument catalogue import (feeds/catalogue.py): checked whole, all or nothing, idempotent."""

from __future__ import annotations

import pytest

from feeds.catalogue import (
    COLUMNS,
    MAX_BYTES,
    SHIPPED,
    instrument_catalogue_import,
    instrument_catalogue_parse,
)
from feeds.models import Instrument

HEADER = ",".join(COLUMNS)
APPLE = "AAPL,Apple Inc.,NASDAQ,NASDAQ:AAPL,apple-inc,AAPL,AAPL"
CHASE = 'JPM,"JPMorgan Chase & Co.",nyse,nyse:jpm,jpmorgan-chase,jpm,JPM'


def csv_bytes(*lines: str, header: str = HEADER) -> bytes:
    return "\n".join([header, *lines, ""]).encode()


def stored() -> dict[str, dict]:
    return {row["symbol"]: row for row in Instrument.objects.values(*COLUMNS)}


def test_a_good_file_parses_into_rows_with_tickers_and_exchanges_upper_cased():
    parsed = instrument_catalogue_parse(data=csv_bytes(APPLE, "", CHASE))
    assert parsed.errors == []
    assert parsed.rows[1] == {"symbol": "JPM", "name": "JPMorgan Chase & Co.", "exchange": "NYSE",
                              "insightsentry_code": "NYSE:JPM", "knowsis_channel": "jpmorgan-chase",
                              "stocktwits_symbol": "JPM", "stocknews_ticker": "JPM"}


def test_columns_may_come_in_any_order_and_a_byte_order_mark_is_not_part_of_the_header():
    header = ",".join(reversed(COLUMNS))
    parsed = instrument_catalogue_parse(data=b"\xef\xbb\xbf" + csv_bytes("MSFT,MSFT,,,NASDAQ,Microsoft,MSFT",
                                                                        header=header))
    assert parsed.errors == []
    assert parsed.rows == [{"symbol": "MSFT", "name": "Microsoft", "exchange": "NASDAQ",
                            "stocktwits_symbol": "MSFT", "stocknews_ticker": "MSFT"}]


@pytest.mark.parametrize("header, expected", [
    (HEADER + ",sector", "line 1: unknown column(s): sector"),
    (HEADER.replace(",stocknews_ticker", ""), "line 1: missing column(s): stocknews_ticker"),
    (HEADER + ",name", "line 1: repeated column(s): name"),
])
def test_a_header_with_unknown_missing_or_repeated_columns_is_refused(header, expected):
    parsed = instrument_catalogue_parse(data=csv_bytes(APPLE, header=header))
    assert parsed.rows == []
    assert str(parsed.errors[0]) == expected
    assert "any order: symbol,name,exchange" in str(parsed.errors[-1])


@pytest.mark.parametrize("line, expected", [
    ("AAPL,Apple Inc.,NASDAQ", "expected 7 cells, found 3"),
    (",No symbol,NYSE,,,,", "symbol is empty"),
    ("AA PL,Apple,NASDAQ,,,,", "symbol 'AA PL' is not a ticker (letters, digits, '.' and '-')"),
    ("AAPL,Apple,NASDAQ,NASDAQ AAPL,,,", "insightsentry_code 'NASDAQ AAPL' is not EXCHANGE:SYMBOL (e.g. NASDAQ:AAPL)"),
    ("AAPL,Apple,NASDAQ,,apple inc,,", "knowsis_channel 'apple inc' is not a channel name (letters, digits and _-=@,.;)"),
    ("AAPL,Apple,NASDAQ,,,$AAPL,", "stocktwits_symbol '$AAPL' is not a ticker (letters, digits, '.' and '-')"),
    ("AAPL,Apple,NASDAQ,,,,AAPL!", "stocknews_ticker 'AAPL!' is not a ticker (letters, digits, '.' and '-')"),
    ("AAPL," + "x" * 201 + ",NASDAQ,,,,", "name is 201 characters long; at most 200"),
    ("AAPL,Apple\x07,NASDAQ,,,,", "name holds a control character"),
])
def test_each_kind_of_bad_line_is_reported_with_its_line_number(line, expected):
    parsed = instrument_catalogue_parse(data=csv_bytes(CHASE, line))
    assert [str(e) for e in parsed.errors] == [f"line 3: {expected}"]


def test_every_bad_line_is_reported_not_only_the_first_and_a_repeated_symbol_names_its_first_line():
    parsed = instrument_catalogue_parse(data=csv_bytes(APPLE, "bad sym,x,,,,,", CHASE, "aapl,Apple again,,,,,",
                                                       'MULTI,"two\nlines",NYSE,,,,', "M S,x,,,,,"))
    assert [str(e) for e in parsed.errors] == [
        "line 3: symbol 'BAD SYM' is not a ticker (letters, digits, '.' and '-')",
        "line 5: symbol AAPL already on line 2",
        "line 6: name holds a control character",  # the line break inside the quoted cell
        "line 8: symbol 'M S' is not a ticker (letters, digits, '.' and '-')",  # that record spans lines 6-7
    ]


@pytest.mark.parametrize("data, expected", [
    (b"", "the file is empty: it needs a header line"),
    (HEADER.encode() + b"\nAAPL,Apple \xff,NASDAQ,,,,\n", "line 2: not UTF-8 text"),
    (csv_bytes('AAPL,"Apple" Inc,NASDAQ,,,,'), "line 2: not CSV: ',' expected after '\"'"),
    (csv_bytes(APPLE) + b"#" * MAX_BYTES, f"the file is larger than {MAX_BYTES:,} bytes: split it"),
])
def test_a_file_that_is_not_a_readable_csv_is_refused_as_a_whole(data, expected):
    parsed = instrument_catalogue_parse(data=data)
    assert [str(e) for e in parsed.errors] == [expected] and parsed.rows == []


@pytest.mark.django_db
def test_an_import_creates_then_a_second_import_of_the_same_file_changes_nothing():
    data = csv_bytes(APPLE, CHASE)
    first = instrument_catalogue_import(data=data)
    assert (first.created, first.updated, first.unchanged, first.errors) == (["AAPL", "JPM"], [], 0, [])
    assert first.applied and first.summary() == "2 created, 0 updated, 0 unchanged"
    assert stored()["JPM"]["insightsentry_code"] == "NYSE:JPM"
    again = instrument_catalogue_import(data=data)
    assert again.summary() == "0 created, 0 updated, 2 unchanged"
    assert Instrument.objects.count() == 2


@pytest.mark.django_db
def test_an_update_writes_only_the_fields_given_and_an_empty_cell_keeps_the_stored_value():
    Instrument.objects.create(symbol="AAPL", name="Apple", exchange="NASDAQ", knowsis_channel="3a158d211ccb",
                              stocktwits_symbol="AAPL")
    result = instrument_catalogue_import(data=csv_bytes("AAPL,Apple Inc.,NASDAQ,NASDAQ:AAPL,,,AAPL"))
    assert result.updated == [("AAPL", ["name", "insightsentry_code", "stocknews_ticker"])]
    assert stored()["AAPL"] == {"symbol": "AAPL", "name": "Apple Inc.", "exchange": "NASDAQ",
                                "insightsentry_code": "NASDAQ:AAPL", "knowsis_channel": "3a158d211ccb",
                                "stocktwits_symbol": "AAPL", "stocknews_ticker": "AAPL"}


@pytest.mark.django_db
def test_one_bad_line_means_nothing_is_written_neither_creates_nor_updates():
    Instrument.objects.create(symbol="AAPL", name="Apple", exchange="NASDAQ")
    before = stored()
    result = instrument_catalogue_import(data=csv_bytes(APPLE, CHASE, "MSFT,Microsoft,NASDAQ,MSFT,,,"))
    assert [str(e) for e in result.errors] == [
        "line 4: insightsentry_code 'MSFT' is not EXCHANGE:SYMBOL (e.g. NASDAQ:AAPL)"]
    assert not result.applied and result.summary() == "1 error(s): nothing imported"
    assert stored() == before


@pytest.mark.django_db
def test_a_dry_run_reports_what_would_change_and_writes_nothing():
    Instrument.objects.create(symbol="AAPL", name="Apple", exchange="NASDAQ")
    result = instrument_catalogue_import(data=csv_bytes(APPLE, CHASE), dry_run=True)
    assert result.created == ["JPM"]
    assert result.updated == [("AAPL", ["name", "insightsentry_code", "knowsis_channel", "stocktwits_symbol",
                                        "stocknews_ticker"])]
    assert not result.applied and result.summary().startswith("dry run: would be 1 created, 1 updated")
    assert list(Instrument.objects.values_list("symbol", "name")) == [("AAPL", "Apple")]


@pytest.mark.django_db
def test_the_shipped_catalogue_imports_cleanly_and_agrees_with_the_demo_and_the_simulators():
    from dashboard.services import DEMO_INSTRUMENTS, demo_seed
    from feeds.providers.insightsentry.subscription import SeriesSettings, build_subscribe
    from feeds.simulators.knowsisgen import company_for_channel
    from feeds.simulators.newsgen import UNIVERSE

    result = instrument_catalogue_import(data=SHIPPED.read_bytes())
    assert result.errors == [] and 100 <= len(result.created) <= 300
    catalogue = stored()
    # Every simulated company is listed under a Knowsis channel the simulator maps back to it.
    assert {symbol: company_for_channel(catalogue[symbol]["knowsis_channel"]).ticker for symbol in UNIVERSE} == {
        symbol: symbol for symbol in UNIVERSE}
    # Every InsightSentry code is one the feed would put on the wire.
    _, invalid = build_subscribe(api_key="k", codes={row["insightsentry_code"] for row in catalogue.values()},
                                 series=SeriesSettings())
    assert invalid == {}
    demo_seed()  # writes the demo instruments' own codes: the catalogue must already hold the same
    assert stored() == catalogue and len(DEMO_INSTRUMENTS) == 8
    assert instrument_catalogue_import(data=SHIPPED.read_bytes()).summary() == \
        f"0 created, 0 updated, {len(catalogue)} unchanged"
