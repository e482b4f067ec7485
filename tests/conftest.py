from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED_AT = datetime(2026, 2, 6, 12, 35, 0, tzinfo=timezone.utc)


def load_fixture(vendor: str, name: str) -> str:
    """The raw text of a recorded payload, exactly as it would arrive on the wire."""
    return (FIXTURES / vendor / name).read_text()


def load_fixture_json(vendor: str, name: str):
    return json.loads(load_fixture(vendor, name))


@pytest.fixture
def received_at() -> datetime:
    return RECEIVED_AT
