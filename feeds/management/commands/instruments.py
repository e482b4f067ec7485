"""Manage the instrument catalogue from the command line.

    manage.py instruments import feeds/catalogue/us_listings.csv --dry-run
    manage.py instruments import listings.csv

The file is checked whole first (feeds/catalogue.py): with any bad line, every problem is printed
with its line number, nothing is written and the exit code is 1. Otherwise the upserts run in one
transaction; importing the same file again reports 0 created, 0 updated.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from feeds.catalogue import MAX_BYTES, instrument_catalogue_import


class Command(BaseCommand):
    help = "Import instruments from a CSV file (symbol, name, exchange and each provider's code)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        load = sub.add_parser("import", help="create or update instruments from a CSV file, all or nothing")
        load.add_argument("file", type=Path)
        load.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")

    def handle(self, *args, action: str, file: Path, dry_run: bool, **options) -> None:
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_BYTES + 1)  # one byte over is enough to refuse it
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from exc
        result = instrument_catalogue_import(data=data, dry_run=dry_run)
        if result.errors:
            for error in result.errors:
                self.stderr.write(f"{file}: {error}")
            raise CommandError(result.summary())
        for symbol in result.created:
            self.stdout.write(f"  {'would create' if dry_run else 'created'} {symbol}")
        for symbol, fields in result.updated:
            self.stdout.write(f"  {'would update' if dry_run else 'updated'} {symbol}: {', '.join(fields)}")
        self.stdout.write(self.style.SUCCESS(result.summary()))
