"""The counter store both planes use: sliding windows hold the budget across a window boundary, moving windows
count exactly, locks expire, and a store that is down counts nothing and refuses nothing."""

from __future__ import annotations

import asyncio
import math
import time

from limits import RateLimitItemPerSecond

from gateway.counters import Counters
from tests.conftest import closed_port


async def test_a_sliding_window_does_not_double_the_budget_at_a_boundary() -> None:
    """Fixed windows let 2x the budget through around a boundary (the budget at the end of one window and again
    at the start of the next); the sliding window counter does not: it weighs the previous window by how much of
    it still overlaps the last two seconds (the library rounds that weight down, hence at most one more)."""
    counters = Counters()
    window = counters.window(RateLimitItemPerSecond(10, 2), "sliding", "test")
    await asyncio.sleep(2 - time.time() % 2 - 0.15)  # the last 0.15 s of a two-second window
    assert [await window.hit("user", "a") for _ in range(10)] == [True] * 10
    await asyncio.sleep(0.3)  # now early in the next window
    second = sum([await window.hit("user", "a") for _ in range(10)])
    elapsed = time.time() % 2  # into the new window (later on a loaded machine)
    assert elapsed < 1
    # A fixed window would let all 10 through; here only the share of the old window that has slid out.
    assert second <= 10 - math.floor(10 * (1 - elapsed / 2)) <= 5
    assert await window.spent("user", "a")
    assert 1 <= await window.retry_after("user", "a") <= 2
    assert await window.hit("user", "b") is True, "another identifier has its own budget"


async def test_a_moving_window_counts_exactly_and_clears() -> None:
    counters = Counters()
    window = counters.window(RateLimitItemPerSecond(3, 60), "moving", "test")
    for expected in (1, 2, 3):
        assert await window.hit("acct", "ann")
        assert await window.count("acct", "ann") == expected
    assert not await window.hit("acct", "ann"), "the fourth is refused and not counted"
    assert await window.count("acct", "ann") == 3
    await window.clear("acct", "ann")
    assert await window.count("acct", "ann") == 0


async def test_locks_expire_and_can_be_lifted() -> None:
    counters = Counters()
    assert await counters.locked_for("acct/ann") == 0
    await counters.lock("acct/ann", 1)
    assert 0 < await counters.locked_for("acct/ann") <= 1
    await counters.lock("acct/ann", 30)
    assert 29 < await counters.locked_for("acct/ann") <= 30, "a new lock replaces the old one"
    await counters.unlock("acct/ann")
    assert await counters.locked_for("acct/ann") == 0
    await counters.lock("acct/bob", 1)
    deadline = time.monotonic() + 3
    while await counters.locked_for("acct/bob") > 0:
        assert time.monotonic() < deadline, "the lock never expired"
        await asyncio.sleep(0.05)


async def test_a_store_that_is_down_counts_nothing_and_refuses_nothing() -> None:
    counters = Counters(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        window = counters.window(RateLimitItemPerSecond(1, 60), "sliding", "test")
        assert [await window.hit("user", "a") for _ in range(3)] == [True] * 3
        assert not await window.spent("user", "a")
        assert await window.count("user", "a") == 0
        await counters.lock("acct/ann", 60)
        assert await counters.locked_for("acct/ann") == 0
    finally:
        await counters.close()
