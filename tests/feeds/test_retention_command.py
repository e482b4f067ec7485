"""`manage.py retention` for a systemd timer: one line per step, exit code 0 when every step ran and 1
when one failed (the others still run); `--dry-run` counts and changes nothing. And the admin page
that shows the policy to staff."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from feeds.models import Bar, CrowdMention, NewsItem, RetentionRun
from feeds.retention import apply_retention
from tests.concurrency import requires_postgres
from tests.factories import instrument

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
NOW = datetime(2026, 3, 2, 10, 17, tzinfo=UTC)


def seed() -> None:
    aapl = instrument("AAPL")
    NewsItem.objects.create(instrument=aapl, provider="stocknews", external_id="old", headline="h",
                            published_at=NOW - timedelta(days=800), received_at=NOW)
    CrowdMention.objects.create(provider="stocktwits", message_id="1", symbol="AAPL", instrument=aapl,
                                created_at=NOW - timedelta(days=8), seq_id="1")
    for minute in range(3):
        Bar.objects.create(instrument=aapl, provider="insightsentry", interval="1m",
                           start=datetime(2026, 1, 30, 14, minute, tzinfo=UTC), open=1, high=2, low=0.5, close=1.5)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("retention", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_applies_the_policy_and_prints_a_line_per_step():
    seed()
    out, err = run("--now", NOW.isoformat())

    lines = out.splitlines()
    assert lines[0] == "retention at 2026-03-02 10:17:00Z for every provider" and err == ""
    assert len(lines) == 1 + 9  # one per step of the default policy
    assert any(line.startswith("crowd_mentions") and "deleted 1 (1 batches" in line for line in lines)
    assert any(line.startswith("bars") and "1m…30m → 1h" in line and "deleted 3, wrote 1" in line for line in lines)
    assert not NewsItem.objects.exists() and not CrowdMention.objects.exists()
    assert RetentionRun.objects.get().origin == "command"


def test_dry_run_prints_what_would_go_per_kind_and_changes_nothing():
    seed()
    out, _ = run("--dry-run", "--now", NOW.isoformat())

    assert "dry run: nothing changed" in out.splitlines()[0]
    assert any(line.startswith("news") and "would delete 1" in line for line in out.splitlines())
    assert any(line.startswith("bars") and "would delete 3, would write 1" in line for line in out.splitlines())
    assert (NewsItem.objects.count(), CrowdMention.objects.count(), Bar.objects.count()) == (1, 1, 3)
    assert not RetentionRun.objects.exists()


def test_json_output_and_a_provider_scope():
    seed()
    out, _ = run("--json", "--provider", "stocknews", "--now", NOW.isoformat())

    report = json.loads(out)
    assert (report["provider"], report["ok"], report["dry_run"]) == ("stocknews", True, False)
    assert {s["kind"]: s["deleted"] for s in report["steps"]}["news"] == 1
    assert CrowdMention.objects.count() == 1  # StockTwits' rows are not stocknews'


@requires_postgres
def test_a_failing_step_exits_1_and_the_others_still_run():
    seed()
    with connection.cursor() as cursor:  # a real failure: the database refuses to delete news
        cursor.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'news is read-only today'; END $$")
        cursor.execute("CREATE TRIGGER refuse BEFORE DELETE ON feeds_newsitem FOR EACH ROW EXECUTE FUNCTION refuse()")
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("retention", "--now", NOW.isoformat(), stdout=out, stderr=err)

    assert failed.value.returncode == 1
    assert "news delete after 730 days:" in err.getvalue() and "news is read-only today" in err.getvalue()
    assert NewsItem.objects.count() == 1 and not CrowdMention.objects.exists()
    assert RetentionRun.objects.get().ok is False


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    settings = connection.settings_dict
    url = (f"postgres://{settings['USER']}:{settings['PASSWORD']}@{settings['HOST'] or '127.0.0.1'}:"
           f"{settings['PORT'] or 5432}/{settings['NAME']}")
    return subprocess.run([sys.executable, "manage.py", "retention", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": url, **env})


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_as_a_process_exit_code_0_then_1_for_a_malformed_policy():
    seed()
    done = manage("--now", NOW.isoformat())
    assert done.returncode == 0, done.stderr
    assert "crowd_mentions" in done.stdout and not NewsItem.objects.exists()

    refused = manage(RETENTION_NEWS_DAYS="soon")
    assert refused.returncode == 1
    assert "RETENTION_NEWS_DAYS must be a number of days" in refused.stderr


# -- the admin page -----------------------------------------------------------------------------

def login(client, *, staff: bool):
    user = get_user_model().objects.create_user("desk", password="pw-for-tests-only-123", is_staff=staff)
    client.force_login(user)
    return user


def test_staff_see_the_policy_and_the_last_runs_in_the_admin(client):
    login(client, staff=True)  # no permissions of their own: the policy is for every staff member
    seed()
    apply_retention(now=NOW)

    index = client.get("/admin/").content.decode()
    assert "/admin/feeds/retentionrun/" in index and "Retention: policy and runs" in index
    page = client.get("/admin/feeds/retentionrun/").content.decode()
    for text in ("Retention policy", "delete after 7 days", "1m…30m → 1h after 30 days", "RETENTION_NEWS_DAYS",
                 "deleted 5, wrote 1", "transactions of at most 10000 rows"):
        assert text in page, text
    assert "Add retention run" not in page


def test_the_policy_page_is_for_staff_only(client):
    login(client, staff=False)
    response = client.get("/admin/feeds/retentionrun/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
