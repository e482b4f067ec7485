"""The simulators' shared base (feeds/simulators/base.py): control dispatch, wait_for/_notify,
background tasks and the query-string helpers, on a toy simulator with no server at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from feeds.simulators.base import (
    SimulatorBase, coerce_fields, flag, number, optional_int, query_params, switch,
)

CONTROL = "ctl-secret"


class Toy(SimulatorBase):
    control_not_found = (LookupError,)

    def __init__(self, control_token: str | None = CONTROL, host: str = "127.0.0.1") -> None:
        super().__init__(host=host, control_token=control_token)
        self.level = 0
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        await self._cancel_tasks()

    def _stats(self) -> dict[str, Any]:
        return {"level": self.level}

    def _control_set(self, query: dict[str, str]) -> None:
        self.level = int(query["level"])

    async def _control_echo(self, query: dict[str, str]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"echo": query}

    def _control_find(self, query: dict[str, str]) -> dict[str, Any]:
        raise LookupError(f"unknown thing {query.get('id')}")


@pytest.mark.asyncio
async def test_control_needs_the_token_and_none_disables_it() -> None:
    sim = Toy()
    assert await sim._control("stats", {}) == (403, {"error": "Forbidden"})
    assert await sim._control("stats", {"token": "wrong"}) == (403, {"error": "Forbidden"})
    assert await sim._control("stats", {"token": CONTROL}) == (200, {"level": 0})
    disabled = Toy(control_token=None)
    assert (await disabled._control("stats", {"token": ""}))[0] == 403
    assert (await disabled._control("stats", {}))[0] == 403


@pytest.mark.asyncio
async def test_control_dispatches_to_control_methods() -> None:
    sim = Toy()
    assert await sim._control("set", {"token": CONTROL, "level": "3"}) == (200, {"level": 3})
    assert sim.level == 3
    # Async actions are awaited; the token never reaches the action.
    assert await sim._control("echo", {"token": CONTROL, "a": "1"}) == (200, {"echo": {"a": "1"}})
    assert await sim._control("nope", {"token": CONTROL}) == (404, {"error": "Unknown action 'nope'"})
    assert (await sim._control("", {"token": CONTROL}))[0] == 404
    assert (await sim._control("__init__", {"token": CONTROL}))[0] == 404  # only _control_* methods


@pytest.mark.asyncio
async def test_control_errors_map_to_statuses() -> None:
    sim = Toy()
    assert await sim._control("set", {"token": CONTROL}) == (400, {"error": "Bad request: 'level'"})
    status, payload = await sim._control("set", {"token": CONTROL, "level": "high"})
    assert status == 400 and payload["error"].startswith("Bad request: invalid literal")
    assert await sim._control("find", {"token": CONTROL, "id": "7"}) == (404, {"error": "unknown thing 7"})
    assert sim.level == 0


@pytest.mark.asyncio
async def test_lookup_errors_are_500s_unless_listed() -> None:
    class Strict(Toy):
        control_not_found = ()

    with pytest.raises(LookupError):
        await Strict()._control("find", {"token": CONTROL})


@pytest.mark.asyncio
async def test_wait_for_is_woken_by_notify_and_times_out() -> None:
    sim = Toy()
    done = False

    async def later() -> None:
        nonlocal done
        await asyncio.sleep(0.02)
        done = True
        sim._notify()

    task = asyncio.create_task(later())
    await sim.wait_for(lambda: done, timeout=1)
    await task
    with pytest.raises(TimeoutError):
        await sim.wait_for(lambda: False, timeout=0.05)


@pytest.mark.asyncio
async def test_context_manager_and_background_tasks() -> None:
    async with Toy() as sim:
        assert isinstance(sim, Toy) and sim.started
        forever = sim._spawn(asyncio.Event().wait())
        quick = sim._spawn(asyncio.sleep(0))
        await quick
        await asyncio.sleep(0)
        assert sim._tasks == {forever}  # finished tasks drop out by themselves
    assert forever.cancelled() and not sim._tasks


@pytest.mark.asyncio
async def test_cancel_tasks_spares_the_caller() -> None:
    sim = Toy()

    async def stopper() -> str:
        await sim._cancel_tasks()
        return "survived"

    other = sim._spawn(asyncio.Event().wait())
    assert await sim._spawn(stopper()) == "survived"
    assert other.cancelled()


def test_public_host() -> None:
    assert Toy(host="0.0.0.0")._public_host == "127.0.0.1"
    assert Toy(host="")._public_host == "127.0.0.1"
    assert Toy(host="10.1.2.3")._public_host == "10.1.2.3"
    with pytest.raises(AssertionError):
        _ = Toy().port  # not started


def test_query_params() -> None:
    assert query_params("a=1&b=2&a=3") == {"a": "3", "b": "2"}  # the last value wins
    assert query_params("a=&b=x") == {"b": "x"}
    assert query_params("a=&b=x", keep_blank=True) == {"a": "", "b": "x"}
    assert query_params("q=caf%C3%A9+au+lait") == {"q": "café au lait"}
    assert query_params("q=%FF") == {"q": "\ufffd"}
    with pytest.raises(UnicodeDecodeError):
        query_params("q=%FF", strict=True)


def test_flags_and_numbers() -> None:
    assert all(flag(v) for v in ("1", "true", "YES", " on "))
    assert not any(flag(v) for v in ("0", "false", "off", "", "maybe"))
    assert switch({}) is True and switch({"on": "0"}) is False and switch({"on": "true"}) is True
    assert optional_int({"n": "42"}, "n") == 42
    assert optional_int({"n": ""}, "n") is None and optional_int({}, "n") is None
    with pytest.raises(ValueError):
        optional_int({"n": "x"}, "n")
    assert number("3") == 3 and isinstance(number("3.0"), int)
    assert number("2.5") == 2.5 and isinstance(number("3", keep_float=True), float)


def test_coerce_fields() -> None:
    fields = {"price": "10", "volume": "1e3", "score": "0.5", "name": "42"}
    coerced = coerce_fields(fields, {"price", "volume", "score"}, floats={"price"})
    assert coerced == {"price": 10.0, "volume": 1000, "score": 0.5, "name": "42"}
    assert isinstance(coerced["price"], float) and isinstance(coerced["volume"], int)
    with pytest.raises(ValueError):
        coerce_fields({"price": "cheap"}, {"price"})
