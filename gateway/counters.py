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
from typing import Literal

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats

log = logging.getLogger("gateway.counters")
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
        try:
            await self.storage.clear(f"lock/{key}")
            await self.storage.incr(f"lock/{key}", max(1, math.ceil(seconds)))
        except StorageError as exc:
            _store_down("lock", exc)

    async def unlock(self, key: str) -> None:
        try:
            await self.storage.clear(f"lock/{key}")
        except StorageError as exc:
            _store_down("lock", exc)

    async def locked_for(self, key: str) -> float:
        """Seconds `key` stays locked; 0 when it is not (or when the store cannot say)."""
        try:
            if await self.storage.get(f"lock/{key}") <= 0:
                return 0.0
            return max(0.0, await self.storage.get_expiry(f"lock/{key}") - time.time())
        except StorageError as exc:
            _store_down("lock", exc)
            return 0.0

    async def incr(self, key: str, seconds: int) -> int:
        """Add one to the counter `key`, which lives `seconds` from its first count; its new value (0 when the
        store cannot say)."""
        try:
            return await self.storage.incr(f"count/{key}", seconds)
        except StorageError as exc:
            _store_down("counter", exc)
            return 0

    async def get(self, key: str) -> int:
        try:
            return await self.storage.get(f"count/{key}")
        except StorageError as exc:
            _store_down("counter", exc)
            return 0

    async def clear(self, key: str) -> None:
        try:
            await self.storage.clear(f"count/{key}")
        except StorageError as exc:
            _store_down("counter", exc)

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
        try:
            return await self._strategy.hit(self.item, *ids)
        except StorageError as exc:
            _store_down(self._what, exc)
            return True

    async def spent(self, *ids: str) -> bool:
        """True when one more event would exceed the budget (nothing is counted)."""
        try:
            return not await self._strategy.test(self.item, *ids)
        except StorageError as exc:
            _store_down(self._what, exc)
            return False

    async def count(self, *ids: str) -> int:
        """Events counted in the window so far."""
        stats = await self._stats(ids)
        return self.item.amount - stats.remaining if stats else 0

    async def retry_after(self, *ids: str) -> int:
        """Whole seconds until the budget has room again (at least 1)."""
        stats = await self._stats(ids)
        return max(1, math.ceil(stats.reset_time - time.time())) if stats else 1

    async def _stats(self, ids: tuple[str, ...]) -> WindowStats | None:
        try:
            return await self._strategy.get_window_stats(self.item, *ids)
        except StorageError as exc:
            _store_down(self._what, exc)
            return None

    async def clear(self, *ids: str) -> None:
        try:
            await self._strategy.clear(self.item, *ids)
        except StorageError as exc:
            _store_down(self._what, exc)


def _store_down(what: str, exc: StorageError) -> None:
    log.warning("%s store unreachable, not counting: %s", what, exc.storage_error)
