"""Stage 3b, rate limit: requests per minute per user and per organization; over budget is 429 + Retry-After.

Fixed one-minute windows, counted in this process, or in Redis (`INCR` + `EXPIRE` in one round trip) so that
every replica spends the same budget. If Redis cannot be reached the request is let through and a warning is
logged: the limit protects upstreams, it does not decide who may do what.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from gateway.errors import TooManyRequests

log = logging.getLogger("gateway.limit")
WINDOW = 60


class Counter(Protocol):
    async def hit(self, key: str, window: int) -> int:
        """Count one request for `key` in `window`; return the count so far."""
        ...

    async def close(self) -> None: ...


class MemoryCounter:
    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, key: str, window: int) -> int:
        if window != self._window:  # a new minute: forget the old one entirely (bounded memory)
            self._window, self._counts = window, {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    async def close(self) -> None:
        return None


class RedisCounter:
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def hit(self, key: str, window: int) -> int:
        from redis.exceptions import RedisError

        name = f"gateway:rl:{window}:{key}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW * 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limit store unreachable, letting the request through: %s", exc)
            return 0
        return int(count)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    def __init__(
        self, counter: Counter, *, per_user: int | None, per_org: int | None, per_key: int | None = None
    ) -> None:
        self.counter = counter
        self._per_user = per_user
        self._per_org = per_org
        self._per_key = per_key

    @property
    def active(self) -> bool:
        return bool(self._per_user or self._per_org or self._per_key)

    async def check(self, user_id: str, org: str, key_id: str | None = None) -> None:
        now = time.time()
        window = int(now // WINDOW)
        retry_after = str(max(1, int((window + 1) * WINDOW - now)))
        budgets = [("user", user_id, self._per_user), ("org", org, self._per_org)]
        if key_id is not None:
            budgets.append(("key", key_id, self._per_key))
        for kind, key, budget in budgets:
            if budget and await self.counter.hit(f"{kind}:{key}", window) > budget:
                raise TooManyRequests(
                    f"more than {budget} requests per minute for this {kind}", retry_after=retry_after
                )
