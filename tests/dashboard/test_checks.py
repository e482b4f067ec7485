"""A missing front-end package stops collectstatic and check --deploy (not a 500 later)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from dashboard.checks import static_sources_present

ROOT = Path(__file__).resolve().parents[2]


def test_present_static_folders_pass():
    assert static_sources_present() == []


def test_a_missing_static_folder_is_an_error_naming_the_fix(settings, tmp_path):
    settings.STATICFILES_DIRS = [*settings.STATICFILES_DIRS[:1], ("vendor/lightweight-charts", tmp_path / "absent")]
    [error] = static_sources_present()
    assert error.id == "dashboard.E001" and error.is_serious()
    assert "npm ci" in error.hint


def test_collectstatic_refuses_to_run_without_the_chart_library(tmp_path):
    code = ("import django, sys; from django.conf import settings; django.setup();"
            "settings.STATICFILES_DIRS[-1] = ('vendor/lightweight-charts', sys.argv[1]);"
            "from django.core.management import execute_from_command_line;"
            "execute_from_command_line(['manage.py', 'collectstatic', '--noinput'])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "absent")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "project.settings",
                                                       "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "localhost",
                                                       "FIELD_ENCRYPTION_KEYS": os.environ["FIELD_ENCRYPTION_KEYS"],
                                                       "STATIC_ROOT": str(tmp_path / "static"), "STATIC_MANIFEST": "1"})
    assert result.returncode != 0
    assert "dashboard.E001" in result.stderr
    assert not (tmp_path / "static" / "staticfiles.json").exists()
