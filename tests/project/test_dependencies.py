"""The installed packages are the locked ones.

An unpinned package moved under us once (redis-py 8 changed its socket timeout and every idle
browser socket dropped after 5 s), so installs come only from the hash-locked files that
`make lock` compiles from `requirements*.in`. These tests fail when what is installed differs
from the lock, or when a `.in` file was edited without re-locking.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(path: Path) -> dict[str, str]:
    """name -> version for every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def declared(path: Path) -> list[Requirement]:
    requirements = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirements.append(Requirement(line))
    return requirements


RUNTIME = locked(ROOT / "requirements.txt")
DEV = locked(ROOT / "requirements-dev.txt")


def test_every_locked_line_carries_a_hash():
    for name in ("requirements.txt", "requirements-dev.txt"):
        text = (ROOT / name).read_text()
        pinned = [line for line in text.splitlines() if PIN.match(line)]
        assert pinned, f"{name} pins nothing"
        for line in pinned:
            assert line.endswith("\\"), f"{name}: {line!r} has no --hash lines"
        assert text.count("--hash=sha256:") >= len(pinned)


@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_installed_runtime_package_matches_the_lock(name):
    try:
        installed = version(name)
    except PackageNotFoundError:
        pytest.fail(f"{name}=={RUNTIME[name]} is locked in requirements.txt but not installed")
    assert installed == RUNTIME[name], f"{name}: installed {installed}, locked {RUNTIME[name]} (run `make venv`)"


def test_dev_lock_agrees_with_the_runtime_lock():
    """requirements-dev.txt is compiled with `-c requirements.txt`: a package in both has one version."""
    assert {name: DEV[name] for name in DEV.keys() & RUNTIME.keys()} == {
        name: RUNTIME[name] for name in DEV.keys() & RUNTIME.keys()}


def test_test_tools_stay_out_of_the_runtime_lock():
    for tool in ("pytest", "pytest-django", "pytest-asyncio", "playwright", "pusher"):
        assert tool not in RUNTIME, f"{tool} is a test tool; it belongs in requirements-dev.in"
        assert tool in DEV


@pytest.mark.parametrize("infile, lock", [("requirements.in", RUNTIME), ("requirements-dev.in", DEV)])
def test_lock_satisfies_what_the_in_file_asks(infile, lock):
    """Editing a .in file without `make lock` leaves the lock behind: caught here."""
    for requirement in declared(ROOT / infile):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} from {infile} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            f"{infile} asks {requirement}, the lock has {lock[name]}: run `make lock`")


def test_pysher_and_websocket_client_are_the_verified_pair():
    # feeds/transports/pusher.py was verified against pysher 1.0.8; websocket-client before 1.9
    # never reconnects after a server close.
    assert RUNTIME["pysher"] == "1.0.8"
    assert (1, 9) <= tuple(int(p) for p in RUNTIME["websocket-client"].split(".")[:2]) < (2, 0)
