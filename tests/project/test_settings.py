"""Production settings: deploy checks pass, and a wildcard host can never be configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "SECRET_KEY": "p" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890",
    "DEBUG": "0",
    "ALLOWED_HOSTS": "desk.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://desk.example.com",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("HTTPS", "STATIC_MANIFEST", "DEBUG", "ALLOWED_HOSTS")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **PRODUCTION, **env},
                          capture_output=True, text=True, timeout=60)


def test_check_deploy_passes_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_wildcard_allowed_hosts_is_refused_in_production():
    result = manage("check", ALLOWED_HOSTS="desk.example.com,*")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS may not contain '*'" in result.stderr


def test_missing_secret_key_is_refused_in_production():
    result = manage("check", SECRET_KEY="")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_redis_url_selects_the_redis_layer_and_its_absence_the_in_memory_one():
    code = "from django.conf import settings; print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    with_redis = manage("shell", "-c", code, REDIS_URL="redis://127.0.0.1:6379/0")
    without = manage("shell", "-c", code, REDIS_URL="")
    assert with_redis.stdout.strip().splitlines()[-1] == "channels_redis.core.RedisChannelLayer"
    assert without.stdout.strip().splitlines()[-1] == "channels.layers.InMemoryChannelLayer"


def test_collected_static_files_are_served_by_the_asgi_app_in_production(tmp_path):
    static_root = str(tmp_path / "static")
    assert manage("collectstatic", "--noinput", STATIC_ROOT=static_root).returncode == 0
    code = (
        "from django.templatetags.static import static; from django.test import Client; "
        "url = static('dashboard/js/board.js'); r = Client().get(url, secure=True, HTTP_HOST='desk.example.com'); "
        "print(url, r.status_code, r.headers.get('Cache-Control'))"
    )
    result = manage("shell", "-c", code, STATIC_ROOT=static_root)
    url, status, cache = result.stdout.strip().splitlines()[-1].split(" ", 2)
    assert url.startswith("/static/dashboard/js/board.") and url != "/static/dashboard/js/board.js"  # hashed name
    assert status == "200" and "max-age" in cache
