"""Apply the retention policy (feeds/retention_policy.py): delete and roll up old market data.

Run by `manage.py retention` (a daily timer: every provider's rows) and by each feed worker on a
schedule (`retention_loop`: its own provider's rows). Both may run at once, and several workers too:
the batches (feeds/retention_batches.py) are bounded, idempotent and take a lock per step and
provider, so a second run skips what another is doing. Each run is recorded (RetentionRun) for the
admin's retention page.

    from feeds.retention import apply_retention, retention_loop
    apply_retention(provider="knowsis")                      # sync, once
    task = asyncio.create_task(retention_loop(provider="knowsis"))   # in a worker, until cancelled
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connections
from django.db.models import Subquery
from django.utils import timezone

from .db import close_broken_connections
from .models import RetentionRun
from .retention_batches import step_count, step_delete, step_roll_up
from .retention_policy import DeleteStep, RetentionPolicy, policy_from_settings, retention_plan

__all__ = ["RetentionReport", "StepReport", "apply_retention", "retention_loop", "retention_policy"]

log = logging.getLogger(__name__)
RUNS_KEPT = 200  # RetentionRun rows kept (the newest), for the admin page
ROLLUP_KINDS = ("bars", "sentiment")


def retention_policy() -> RetentionPolicy:
    return policy_from_settings(settings)


@dataclass
class StepReport:
    kind: str
    rule: str
    cutoff: datetime
    deleted: int = 0  # rows removed (a roll-up's sources included); in a dry run: would be
    created: int = 0  # rows a roll-up wrote; in a dry run: periods it would write (at most)
    batches: int = 0
    busy: int = 0  # parts left to another run that held their lock
    seconds: float = 0.0
    error: str = ""

    def as_dict(self) -> dict:
        return {**asdict(self), "cutoff": self.cutoff.isoformat(), "seconds": round(self.seconds, 3)}

    def line(self, dry_run: bool) -> str:
        verb = ("would delete", "would write") if dry_run else ("deleted", "wrote")
        text = f"{self.kind:<19} {self.rule:<26} before {self.cutoff:%Y-%m-%d %H:%M}Z: {verb[0]} {self.deleted:,}"
        if self.kind in ROLLUP_KINDS:
            text += f", {verb[1]} {self.created:,}"
        text += f" ({self.batches} batches, {self.seconds:.1f} s)" if not dry_run else ""
        text += f"; busy: {self.busy} part(s) left to another run" if self.busy else ""
        return text + (f"; ERROR {self.error}" if self.error else "")


@dataclass
class RetentionReport:
    now: datetime
    provider: str | None
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return not any(step.error for step in self.steps)

    def as_dict(self) -> dict:
        return {"now": self.now.isoformat(), "provider": self.provider, "dry_run": self.dry_run, "ok": self.ok,
                "stopped": self.stopped, "steps": [step.as_dict() for step in self.steps]}


def apply_retention(*, provider: str | None = None, now: datetime | None = None, dry_run: bool = False,
                    origin: str = "command", policy: RetentionPolicy | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> RetentionReport:
    """Apply the policy at `now` (default: the current time) to `provider`'s rows (None: all rows),
    and record what it did (a RetentionRun). With `dry_run`, count what would go and change nothing.

    A step that fails is reported (`error`) and the others still run; `should_stop` is checked
    between batches, so a stopping worker ends the run within one batch."""
    policy = policy or retention_policy()
    now = (now or timezone.now()).astimezone(dt_timezone.utc)
    report = RetentionReport(now=now, provider=provider, dry_run=dry_run)
    started = timezone.now()
    for step in retention_plan(policy, now=now):
        if should_stop():
            report.stopped = True
            break
        result = StepReport(kind=step.kind, rule=step.label, cutoff=step.cutoff)
        report.steps.append(result)
        clock = time.monotonic()
        try:
            if dry_run:
                step_count(step, provider, result)
            elif isinstance(step, DeleteStep):
                step_delete(step, provider, result, batch=policy.batch_rows, should_stop=should_stop)
            else:
                step_roll_up(step, provider, result, batch=policy.batch_rows, should_stop=should_stop)
        except Exception as exc:  # one step's failure must not keep the others from running
            log.exception("retention: %s %s failed", step.kind, step.label)
            result.error = f"{type(exc).__name__}: {exc}"[:500]
        result.seconds = time.monotonic() - clock
    if not dry_run:
        _record(report, origin=origin, started=started)
    return report


def _record(report: RetentionReport, *, origin: str, started: datetime) -> None:
    RetentionRun.objects.create(started_at=started, finished_at=timezone.now(), origin=origin[:64],
                                provider=report.provider or "", ok=report.ok, summary=report.as_dict())
    newest = RetentionRun.objects.order_by("-started_at", "-id").values("id")[:RUNS_KEPT]
    RetentionRun.objects.exclude(id__in=Subquery(newest)).delete()


# -- on a schedule, in a feed worker ------------------------------------------------------------

async def retention_loop(*, provider: str, interval: float | None = None) -> None:
    """Apply the policy to `provider`'s rows now and every `interval` seconds (default
    RETENTION_WORKER_INTERVAL_SECONDS; 0 or less: never), until cancelled.

    Runs on a thread and connection of its own: a run may take seconds, and the pipeline's thread
    must stay free for the feed. On cancellation the run in progress stops after its current batch."""
    interval = settings.RETENTION_WORKER_INTERVAL_SECONDS if interval is None else interval
    if interval <= 0:
        return
    stopping = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"retention-{provider}")
    loop = asyncio.get_running_loop()

    def run() -> RetentionReport:
        close_broken_connections()
        return apply_retention(provider=provider, origin=f"worker:{provider}", should_stop=stopping.is_set)

    try:
        while True:
            try:
                report = await loop.run_in_executor(executor, run)
                done = [step.line(False) for step in report.steps if step.deleted or step.error or step.busy]
                log.log(logging.INFO if report.ok else logging.ERROR, "retention for %s: %s", provider,
                        "; ".join(done) or "nothing to do")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention for %s failed; next try in %.0f s", provider, interval)
            await asyncio.sleep(interval)
    finally:
        stopping.set()  # read by the run between batches: it ends within one
        executor.submit(connections.close_all)
        executor.shutdown(wait=False)
