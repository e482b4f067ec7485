"""What every provider simulator shares, whatever protocol it speaks: the async context manager,
`wait_for()` woken by `_notify()`, background tasks, and the `/control/<action>?token=...` knob
endpoints (token check, dispatch to `_control_<action>` methods, JSON answers), plus helpers that
turn query-string text into knob values. Transport-specific parts live in `wsbase` and `http`.
Pure asyncio: no Django here.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Coroutine, Iterable, Self
from urllib.parse import parse_qs

_TRUE = {"1", "true", "yes", "on"}


class SimulatorBase:
    """Subclasses call `super().__init__(host=..., control_token=...)`, implement start()/stop()
    and `_stats()`, and add knobs reachable over HTTP as `_control_<action>(query)` methods.

    A control method takes the query parameters (`token` removed) and returns the JSON answer, or
    None to answer with `_stats()`; KeyError/ValueError (a missing or malformed parameter) answer
    400, exceptions listed in `control_not_found` answer 404. `/control/stats` is always there.
    """

    control_not_found: tuple[type[Exception], ...] = ()
    _server: Any = None  # the listening server (asyncio's or websockets'), once started

    def __init__(self, *, host: str, control_token: str | None) -> None:
        self.host = host
        self.control_token = control_token  # None: every /control/... request is refused (403)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the simulator first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def _public_host(self) -> str:
        """The host clients dial: a wildcard bind is reachable on loopback."""
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in the background until it ends or `_cancel_tasks()` (stop) cancels it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        """Cancel every background task but the caller's own, and wait until they have ended."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- observability -----------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = 5.0) -> None:
        """Wait until `predicate()` is true: woken by state changes, re-checked every 10 ms."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.01)
                except TimeoutError:
                    pass

    def _notify(self) -> None:
        """Something observable changed: wake every wait_for()."""
        self._changed.set()

    # -- /control/<action> -------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _control_stats(self, query: dict[str, str]) -> None:
        return None  # changes nothing: the answer is the stats

    async def _control(self, action: str, query: dict[str, str]) -> tuple[int, Any]:
        """(HTTP status, JSON payload) for `/control/<action>` with these query parameters."""
        if self.control_token is None or query.pop("token", None) != self.control_token:
            return 403, {"error": "Forbidden"}
        handler = getattr(self, f"_control_{action}", None)
        if handler is None:
            return 404, {"error": f"Unknown action {action!r}"}
        try:
            result = handler(query)
            if inspect.isawaitable(result):
                result = await result
        except (KeyError, ValueError) as exc:
            return 400, {"error": f"Bad request: {exc}"}
        except self.control_not_found as exc:
            return 404, {"error": str(exc)}
        return 200, self._stats() if result is None else result


# -- query-string values -----------------------------------------------------------------------------


def query_params(query: str, *, keep_blank: bool = False, strict: bool = False) -> dict[str, str]:
    """Parse a query string, the last value winning; `strict` raises on bytes that aren't UTF-8."""
    parsed = parse_qs(query, keep_blank_values=keep_blank, encoding="utf-8",
                      errors="strict" if strict else "replace")
    return {k: v[-1] for k, v in parsed.items()}


def flag(value: str) -> bool:
    return value.strip().lower() in _TRUE


def switch(query: dict[str, str]) -> bool:
    """A toggle action's `on` parameter: absent means on, `on=0` (or false/no/off) means off."""
    return flag(query.get("on", "1"))


def optional_int(query: dict[str, str], name: str) -> int | None:
    """`name` as an int; None when absent or empty (which clears a knob)."""
    value = query.get(name)
    return int(value) if value else None


def number(value: str, *, keep_float: bool = False) -> int | float:
    """Numeric text as a JSON number: an int when whole, unless `keep_float`."""
    result = float(value)
    return int(result) if result.is_integer() and not keep_float else result


def coerce_fields(fields: dict[str, str], numeric: Iterable[str], floats: Iterable[str] = ()) -> dict[str, Any]:
    """Query strings are text; fields in `numeric` must stay numbers in emitted JSON (those in
    `floats` stay floats even when whole, e.g. prices); the rest stay strings."""
    numbers, keep_float = set(numeric), set(floats)
    return {k: number(v, keep_float=k in keep_float) if k in numbers else v for k, v in fields.items()}
