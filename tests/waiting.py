"""Waiting for something to happen instead of sleeping and hoping: poll a condition until it holds or a deadline
passes, then fail saying what never happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast, overload

T = TypeVar("T")


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], *, within: float = ..., every: float = ..., what: str = ...
) -> T: ...
@overload
async def eventually(predicate: Callable[[], T], *, within: float = ..., every: float = ..., what: str = ...) -> T: ...
async def eventually(
    predicate: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    within: float = 5.0,
    every: float = 0.02,
    what: str = "",
) -> T:
    """Call `predicate` (plain or async) every `every` seconds until it returns something truthy, and return that;
    an AssertionError naming `what` if it never does `within` seconds. The last call is made at the deadline, so a
    slow predicate still gets one look at the final state."""
    deadline = time.monotonic() + within
    while True:
        outcome = predicate()
        result = cast(T, await outcome if inspect.isawaitable(outcome) else outcome)
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within} s: {what or predicate}")
        await asyncio.sleep(every)


def eventually_blocking(predicate: Callable[[], T], *, within: float = 5.0, every: float = 0.05, what: str = "") -> T:
    """`eventually` for synchronous tests (a process started with subprocess, read with urllib)."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within} s: {what or predicate}")
        time.sleep(every)
