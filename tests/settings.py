"""Test settings: the production settings module, fed a test environment.

Tests use the real Redis channel layer (REDIS_URL, default 127.0.0.1:6379), with a key
prefix per test run so parallel runs on one Redis never see each other's messages.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "tests-only-" + "k" * 50)
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("STATIC_MANIFEST", "0")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"twtest-{uuid.uuid4().hex[:8]}")

from project.settings import *  # noqa: E402,F401,F403
