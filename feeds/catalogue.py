"""The instrument catalogue: a CSV of listings, checked whole, then upserted by symbol in one transaction.

    symbol,name,exchange,insightsentry_code,knowsis_channel,stocktwits_symbol,stocknews_ticker
    AAPL,Apple Inc.,NASDAQ,NASDAQ:AAPL,apple-inc,AAPL,AAPL

All or nothing: every bad line is reported (line number and reason) and, if there is one, nothing is
written, so a file fixed and imported again never meets a half-applied earlier attempt. An empty cell
means "not given": a new instrument gets "" there and a stored one keeps its value, so a file that
knows only some providers' codes cannot wipe the others. (Clearing a code is an edit in the admin.)
Importing the same file twice changes nothing the second time: rows equal to what is stored are
counted as unchanged, not written.

Used by `manage.py instruments import`, the Instrument admin's "Import CSV" and the demo set-up.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, transaction

from .models import Instrument
from .providers.insightsentry.subscription import CODE as INSIGHTSENTRY_CODE

__all__ = ["SHIPPED", "COLUMNS", "MAX_BYTES", "MAX_ROWS", "LineError", "CatalogueRows", "CatalogueImport",
           "instrument_catalogue_parse", "instrument_catalogue_import"]

# About 260 common US listings (NASDAQ, NYSE, the main NYSE Arca ETFs) with each provider's code in
# the formats of ../shared/providers; the demo loads it at every start.
SHIPPED = Path(__file__).resolve().parent / "catalogue" / "us_listings.csv"
COLUMNS = ("symbol", "name", "exchange", "insightsentry_code", "knowsis_channel", "stocktwits_symbol",
           "stocknews_ticker")
# A US-wide listing (~10,000 rows) is about 1 MB; the bound keeps an upload or a wrong file from
# holding a worker and its memory for long.
MAX_BYTES = 4 * 1024 * 1024
MAX_ROWS = 50_000

TICKER = re.compile(r"[A-Z0-9][A-Z0-9.\-]*")  # BRK.B, BF-B; StockTwits' crypto as BTC.X
# Pusher's channel-name alphabet: the Knowsis feed subscribes with this name as it is.
PUSHER_CHANNEL = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LENGTH = {name: Instrument._meta.get_field(name).max_length for name in COLUMNS}
UPPER_CASE = {"symbol", "exchange", "insightsentry_code", "stocktwits_symbol", "stocknews_ticker"}


@dataclass(frozen=True)
class LineError:
    line: int  # 1 is the header; 0 is the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class CatalogueRows:
    rows: list[dict[str, str]] = field(default_factory=list)  # symbol plus each non-empty cell
    errors: list[LineError] = field(default_factory=list)


@dataclass
class CatalogueImport:
    created: list[str] = field(default_factory=list)
    updated: list[tuple[str, list[str]]] = field(default_factory=list)  # (symbol, changed fields)
    unchanged: int = 0
    errors: list[LineError] = field(default_factory=list)
    dry_run: bool = False

    @property
    def applied(self) -> bool:
        return not (self.dry_run or self.errors)

    def summary(self) -> str:
        if self.errors:
            return f"{len(self.errors)} error(s): nothing imported"
        counts = f"{len(self.created)} created, {len(self.updated)} updated, {self.unchanged} unchanged"
        return f"dry run: would be {counts}; nothing written" if self.dry_run else counts


def _cell_problems(name: str, value: str) -> list[str]:
    if CONTROL.search(value):
        return [f"{name} holds a control character"]
    if len(value) > MAX_LENGTH[name]:
        return [f"{name} is {len(value)} characters long; at most {MAX_LENGTH[name]}"]
    if name in ("symbol", "stocktwits_symbol", "stocknews_ticker") and not TICKER.fullmatch(value):
        return [f"{name} {value!r} is not a ticker (letters, digits, '.' and '-')"]
    if name == "insightsentry_code" and not INSIGHTSENTRY_CODE.match(value):
        return [f"insightsentry_code {value!r} is not EXCHANGE:SYMBOL (e.g. NASDAQ:AAPL)"]
    if name == "knowsis_channel" and not PUSHER_CHANNEL.fullmatch(value):
        return [f"knowsis_channel {value!r} is not a channel name (letters, digits and _-=@,.;)"]
    return []


def _header_problems(header: list[str]) -> list[str]:
    seen = [name.strip().lower() for name in header]
    problems = []
    if unknown := [name for name in seen if name not in COLUMNS]:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if missing := [name for name in COLUMNS if name not in seen]:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if repeated := sorted({name for name in seen if seen.count(name) > 1}):
        problems.append(f"repeated column(s): {', '.join(repeated)}")
    if problems:
        problems.append(f"the header must name these columns, in any order: {','.join(COLUMNS)}")
    return problems


def _decode(data: bytes) -> tuple[str | None, LineError | None]:
    if len(data) > MAX_BYTES:
        return None, LineError(0, f"the file is larger than {MAX_BYTES:,} bytes: split it")
    try:
        return data.decode("utf-8-sig"), None  # a spreadsheet's byte-order mark is not part of "symbol"
    except UnicodeDecodeError as exc:
        return None, LineError(data[:exc.start].count(b"\n") + 1, "not UTF-8 text")


def instrument_catalogue_parse(*, data: bytes) -> CatalogueRows:
    """Every row of the file, checked, or every problem found. Pure: reads no database."""
    text, problem = _decode(data)
    if problem:
        return CatalogueRows(errors=[problem])
    result, header, first_line_of, records = CatalogueRows(), None, {}, 0
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    ended = 0  # the physical line the previous record ended on: a quoted cell may span lines
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(LineError(reader.line_num, f"not CSV: {exc}"))
            break
        line, ended = ended + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [name.strip().lower() for name in cells]
            if problems := _header_problems(cells):
                return CatalogueRows(errors=[LineError(line, p) for p in problems])
            continue
        records += 1
        if records > MAX_ROWS:
            result.errors.append(LineError(line, f"more than {MAX_ROWS:,} rows; split the file"))
            break
        if len(cells) != len(header):
            result.errors.append(LineError(line, f"expected {len(header)} cells, found {len(cells)}"))
        else:
            _check_row(result, line, dict(zip(header, (cell.strip() for cell in cells))), first_line_of)
    if header is None and not result.errors:
        result.errors.append(LineError(0, "the file is empty: it needs a header line"))
    return result


def _check_row(result: CatalogueRows, line: int, cells: dict[str, str], first_line_of: dict[str, int]) -> None:
    row = {name: value.upper() if name in UPPER_CASE else value for name, value in cells.items() if value}
    problems = [] if row.get("symbol") else ["symbol is empty"]
    for name, value in row.items():
        problems += _cell_problems(name, value)
    symbol = row.get("symbol", "")
    if symbol in first_line_of:
        problems.append(f"symbol {symbol} already on line {first_line_of[symbol]}")
    elif symbol:
        first_line_of[symbol] = line
    if problems:
        result.errors.extend(LineError(line, p) for p in problems)
    else:
        result.rows.append(row)


def instrument_catalogue_import(*, data: bytes, dry_run: bool = False) -> CatalogueImport:
    """Check the whole file; if it is sound, create or update each instrument by symbol (only the
    fields given, only where they differ), in one transaction. `dry_run` reports the same and writes
    nothing."""
    parsed = instrument_catalogue_parse(data=data)
    if parsed.errors:
        return CatalogueImport(errors=parsed.errors, dry_run=dry_run)
    try:
        with transaction.atomic():
            report, created, changed = _plan(parsed.rows, dry_run=dry_run)
            if not dry_run:
                Instrument.objects.bulk_create(created, batch_size=500)
                if changed:
                    fields = sorted({name for _, names in report.updated for name in names})
                    Instrument.objects.bulk_update(changed, fields, batch_size=500)
    except IntegrityError:  # another import or an admin edit created one of these symbols meanwhile
        return CatalogueImport(errors=[LineError(0, "some of these symbols were created meanwhile by another change;"
                                                    " nothing imported: import the file again")], dry_run=dry_run)
    return report


def _plan(rows: list[dict[str, str]], *, dry_run: bool) -> tuple[CatalogueImport, list[Instrument], list[Instrument]]:
    stored = Instrument.objects.in_bulk([row["symbol"] for row in rows], field_name="symbol")
    report, created, changed = CatalogueImport(dry_run=dry_run), [], []
    for row in rows:
        instrument = stored.get(row["symbol"])
        if instrument is None:
            created.append(Instrument(**row))
            report.created.append(row["symbol"])
            continue
        names = [name for name, value in row.items() if getattr(instrument, name) != value]
        if not names:
            report.unchanged += 1
            continue
        for name in names:
            setattr(instrument, name, row[name])
        changed.append(instrument)
        report.updated.append((row["symbol"], names))
    return report, created, changed
