"""Test settings: the production settings module, fed a test environment.

Tests use the real Redis channel layer (REDIS_URL, default 127.0.0.1:6379), with a key
prefix per test run so parallel runs on one Redis never see each other's messages.

The database is PostgreSQL, as in production (`scripts/ensure-postgres` provides the server and
the `tickerwire` role). Every pytest process gets its own database name, `tickerwire_<pid>_<hex>`
(pytest-django creates `test_` + it and drops it at the end), so concurrent runs on one machine
never share one. DATABASE_URL overrides the server, credentials and base name (the per-process
suffix is still appended); a `sqlite:///…` URL gives the SQLite smoke run of the embedded default,
where the tests that need PostgreSQL's concurrency skip.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "tests-only-" + "k" * 50)
# Written to os.environ, so the subprocesses tests start (workers, Daphne) read what this process wrote.
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "0VEPv2cURvIeyBPSxt9HHq58eAsdEQsB2Lr-XMWPJsA=")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("STATIC_MANIFEST", "0")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"twtest-{uuid.uuid4().hex[:8]}")
# The loopback receivers of the alert delivery tests (dashboard/senders.py refuses loopback by default).
os.environ.setdefault("ALERT_DESTINATION_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")

from project.settings import *  # noqa: E402,F401,F403
import dj_database_url  # noqa: E402

from tests import postgres  # noqa: E402

# Not written back to os.environ: subprocesses started by tests choose their own database.
if not os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(postgres.database_url("tickerwire"),  # noqa: F811
                                                  conn_max_age=DATABASES["default"]["CONN_MAX_AGE"])}  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _base = "".join(c for c in DATABASES["default"]["NAME"].lower() if c.isalnum()).lstrip("0123456789")
    DATABASES["default"]["NAME"] = postgres.unique_name((_base or "tickerwire")[:30])
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, as the embedded default has (WAL, busy timeout): Django's default in-memory test
    # database shares one cache between threads, where a second writer (e.g. the webhook processor
    # thread) fails at once with "database table is locked" instead of waiting its turn.
    DATABASES["default"]["TEST"] = {"NAME": f"{DATABASES['default']['NAME']}.test"}

# Users made in the test process hash their passwords cheaply (tests/hashers.py); every hasher the
# production settings accept still verifies.
from django.conf import global_settings  # noqa: E402

PASSWORD_HASHERS = ["tests.hashers.FastPBKDF2PasswordHasher", *global_settings.PASSWORD_HASHERS]
