"""websocket-client before 1.9 never reconnects after a server close under pysher: the pin must
hold in what is installed, not only in requirements.txt."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path


def _tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_websocket_client_is_pinned_to_a_working_range():
    requirements = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    assert "websocket-client>=1.9,<2" in requirements
    assert (1, 9) <= _tuple(version("websocket-client")) < (2, 0)
    assert version("pysher") == "1.0.8"  # the wrapper in feeds/transports/pusher.py was verified against it
