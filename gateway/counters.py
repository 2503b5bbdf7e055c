"""Counters in time windows, shared by the proxy's rate limits and the login throttle.

One store per process, from the `limits` library: in this process's memory, or in Redis (`rate_limits.redis_url`)
so that every replica counts against the same numbers. A `Window` is one budget over one strategy:

- sliding window counter (the rate limits: a weighted sum of the current and previous window, O(1) per key, so a
  client cannot spend twice the budget across a window boundary as with fixed windows);
- moving window (login failures: every event is kept for the window, so counts are exact).

The store failing (Redis unreachable, slow or erroring) never fails a request: every operation answers as if
nothing had been counted and logs a warning. Counters protect upstreams and slow guessing down; who may do what
is decided elsewhere, without them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from typing import Literal, TypeVar

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats

log = logging.getLogger("gateway.counters")
T = TypeVar("T")
# Redis answers in well under a millisecond; a store slower than this is treated as down for that call.
REDIS_TIMEOUT_SECONDS = 0.5


class Counters:
    """The process's counter store and its two strategies; `close()` releases the Redis connections."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._pool = None
        if redis_url:
            from redis.asyncio import ConnectionPool

            self._pool = ConnectionPool.from_url(
                redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
            )
            # The pool carries the URL; limits only needs to know it talks to Redis (through redis-py).
            self.storage: Storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                connection_pool=self._pool,  # type: ignore[arg-type]  # documented; the stub types only scalars
                key_prefix="gateway",
                wrap_exceptions=True,
            )
        else:
            self.storage = MemoryStorage(wrap_exceptions=True)
        self.sliding: RateLimiter = SlidingWindowCounterRateLimiter(self.storage)
        self.moving: RateLimiter = MovingWindowRateLimiter(self.storage)

    def window(self, item: RateLimitItem, strategy: Literal["sliding", "moving"], what: str) -> Window:
        """A budget of `item` counted with `strategy`; `what` names it in warnings."""
        return Window(self.sliding if strategy == "sliding" else self.moving, item, what)

    async def lock(self, key: str, seconds: float) -> None:
        """Hold `key` locked for `seconds` (rounded up to whole seconds), replacing any lock it had."""

        async def relock() -> None:
            await self.storage.clear(f"lock/{key}")
            await self.storage.incr(f"lock/{key}", max(1, math.ceil(seconds)))

        await _or_else("lock", relock(), None)

    async def unlock(self, key: str) -> None:
        await _or_else("lock", self.storage.clear(f"lock/{key}"), None)

    async def locked_for(self, key: str) -> float:
        """Seconds `key` stays locked; 0 when it is not (or when the store cannot say)."""

        async def remaining() -> float:
            if await self.storage.get(f"lock/{key}") <= 0:
                return 0.0
            return max(0.0, await self.storage.get_expiry(f"lock/{key}") - time.time())

        return await _or_else("lock", remaining(), 0.0)

    async def incr(self, key: str, seconds: int) -> int:
        """Add one to the counter `key`, which lives `seconds` from its first count; its new value (0 when the
        store cannot say)."""
        return await _or_else("counter", self.storage.incr(f"count/{key}", seconds), 0)

    async def get(self, key: str) -> int:
        return await _or_else("counter", self.storage.get(f"count/{key}"), 0)

    async def clear(self, key: str) -> None:
        await _or_else("counter", self.storage.clear(f"count/{key}"), None)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class Window:
    """One budget (`item`: so many per so long) counted per identifier with one strategy."""

    def __init__(self, strategy: RateLimiter, item: RateLimitItem, what: str) -> None:
        self._strategy = strategy
        self.item = item
        self._what = what

    async def hit(self, *ids: str) -> bool:
        """Count one event; False (and nothing counted) when the budget is already spent."""
        return await _or_else(self._what, self._strategy.hit(self.item, *ids), True)

    async def spent(self, *ids: str) -> bool:
        """True when one more event would exceed the budget (nothing is counted)."""
        return not await _or_else(self._what, self._strategy.test(self.item, *ids), True)

    async def count(self, *ids: str) -> int:
        """Events counted in the window so far."""
        stats = await self._stats(ids)
        return self.item.amount - stats.remaining if stats else 0

    async def retry_after(self, *ids: str) -> int:
        """Whole seconds until the budget has room again (at least 1)."""
        stats = await self._stats(ids)
        return max(1, math.ceil(stats.reset_time - time.time())) if stats else 1

    async def _stats(self, ids: tuple[str, ...]) -> WindowStats | None:
        return await _or_else(self._what, self._strategy.get_window_stats(self.item, *ids), None)

    async def clear(self, *ids: str) -> None:
        await _or_else(self._what, self._strategy.clear(self.item, *ids), None)


async def _or_else(what: str, work: Awaitable[T], fallback: T) -> T:
    """`work`'s answer, or `fallback` (and a warning) when the store fails: counters never fail a request."""
    try:
        return await work
    except StorageError as exc:
        log.warning("%s store unreachable, not counting: %s", what, exc.storage_error)
        return fallback
