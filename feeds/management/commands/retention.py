"""`manage.py retention`: apply the retention policy once (feeds/retention.py), for a systemd timer.

    manage.py retention                  # apply; one line per step, on stdout
    manage.py retention --dry-run        # what would go, per step; changes nothing
    manage.py retention --provider knowsis

Exit code 0 when every step ran (a step another run was doing counts as done: it is being done),
1 when one failed (its error is printed on stderr; the other steps still ran), so the timer's unit
shows failed and the journal has the reason. Safe beside the feed workers and beside another run.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from feeds.models import Provider
from feeds.retention import apply_retention, retention_policy
from feeds.retention_policy import PolicyError


class Command(BaseCommand):
    help = "Delete and roll up old market data as the retention policy says (RETENTION_* settings)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; change nothing.")
        parser.add_argument("--provider", choices=[p.value for p in Provider],
                            help="Only this provider's rows (default: everyone's).")
        parser.add_argument("--now", type=datetime.fromisoformat,
                            help="Apply as if it were this time (ISO 8601 with offset), e.g. to preview.")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the report as JSON instead of lines.")

    def handle(self, *args, dry_run: bool, provider: str | None, now: datetime | None, as_json: bool,
               **options) -> None:
        if now is not None and now.tzinfo is None:
            raise CommandError("--now needs a UTC offset, e.g. 2026-03-01T00:00:00+00:00")
        try:
            policy = retention_policy()
        except PolicyError as exc:
            raise CommandError(f"retention policy: {exc}") from None
        report = apply_retention(provider=provider, now=now, dry_run=dry_run, policy=policy)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            head = "retention (dry run: nothing changed)" if dry_run else "retention"
            self.stdout.write(f"{head} at {report.now:%Y-%m-%d %H:%M:%S}Z for {provider or 'every provider'}")
            for step in report.steps:
                self.stdout.write(step.line(dry_run))
        failed = [step for step in report.steps if step.error]
        for step in failed:
            self.stderr.write(f"{step.kind} {step.rule}: {step.error}")
        if failed:
            raise CommandError(f"{len(failed)} retention step(s) failed", returncode=1)

