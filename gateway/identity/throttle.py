"""Login throttling: per account and per client IP, with a growing lockout; 429 with Retry-After.

Failures are counted for the email as typed (normalised), whether or not an account has it, so throttling
answers the same for known and unknown addresses. After `login.free_failures` consecutive failures an account
is locked for `base_lock_seconds`, doubling with each further failure up to `max_lock_seconds` (15 min); during
the lock even the right password gets 429. A success clears the account's count. Counts live in this process, or in
Redis when `rate_limits.redis_url` is set, so that every replica shares them. Password reset never consults
this: a locked-out user can always reset, and a completed reset (it proves the mailbox) clears the account's
count and lock; the per-IP limits stay.

Second factors are counted the same way, per account (`mfa:<user id>`), across challenges: with the password,
an attacker could otherwise open challenge after challenge (each dies after 5 wrong codes) and guess codes
without end (RFC 4226 §7.3, applied to TOTP by RFC 6238 §5.1). The lock grows the same way; the user is told
by email when it first applies.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from gateway.errors import TooManyRequests
from gateway.settings import Login

log = logging.getLogger("gateway.throttle")
WINDOW_SECONDS = 900
_MAX_ENTRIES = 200_000


class FailureStore(Protocol):
    async def fail(self, key: str, ttl: int) -> int:
        """Count one failure for `key` (kept `ttl` seconds after the last one); return the count."""
        ...

    async def clear(self, key: str) -> None: ...

    async def lock(self, key: str, seconds: float) -> None: ...

    async def unlock(self, key: str) -> None: ...

    async def locked_for(self, key: str) -> float:
        """Seconds the key stays locked (0 when it is not)."""
        ...

    async def close(self) -> None: ...


class MemoryFailures:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._locks: dict[str, float] = {}

    def _prune(self, now: float) -> None:
        if len(self._counts) + len(self._locks) < _MAX_ENTRIES:
            return
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        self._locks = {k: v for k, v in self._locks.items() if v > now}

    async def fail(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        self._prune(now)
        count, expires = self._counts.get(key, (0, 0.0))
        count = count + 1 if expires > now else 1
        self._counts[key] = (count, now + ttl)
        return count

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)

    async def lock(self, key: str, seconds: float) -> None:
        self._locks[key] = time.monotonic() + seconds

    async def unlock(self, key: str) -> None:
        self._locks.pop(key, None)

    async def locked_for(self, key: str) -> float:
        return max(0.0, self._locks.get(key, 0.0) - time.monotonic())

    async def close(self) -> None:
        return None


class RedisFailures:
    """The same counts in Redis; if Redis is unreachable, logins are not throttled (and a warning is logged)."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def fail(self, key: str, ttl: int) -> int:
        from redis.exceptions import RedisError

        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(f"gateway:lf:{key}")
                pipe.expire(f"gateway:lf:{key}", ttl)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("login throttle store unreachable: %s", exc)
            return 0
        return int(count)

    async def clear(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.delete(f"gateway:lf:{key}")
        except (RedisError, OSError) as exc:
            log.warning("login throttle store unreachable: %s", exc)

    async def lock(self, key: str, seconds: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(f"gateway:ll:{key}", b"1", px=max(1, int(seconds * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("login throttle store unreachable: %s", exc)

    async def unlock(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.delete(f"gateway:ll:{key}")
        except (RedisError, OSError) as exc:
            log.warning("login throttle store unreachable: %s", exc)

    async def locked_for(self, key: str) -> float:
        from redis.exceptions import RedisError

        try:
            remaining = int(await self._redis.pttl(f"gateway:ll:{key}"))
        except (RedisError, OSError) as exc:
            log.warning("login throttle store unreachable: %s", exc)
            return 0.0
        return remaining / 1000 if remaining > 0 else 0.0

    async def close(self) -> None:
        await self._redis.aclose()


class LoginThrottle:
    """Asked before a password is checked (`check`) and told the outcome (`failed`, `succeeded`)."""

    def __init__(self, store: FailureStore, settings: Login) -> None:
        self.store = store
        self._settings = settings

    async def check(self, account: str, ip: str) -> None:
        """429 while the account or the IP is locked out."""
        for key in (f"acct:{account}", f"ip:{ip}"):
            remaining = await self.store.locked_for(key)
            if remaining > 0:
                raise TooManyRequests(
                    "too many failed logins; try again later or reset the password",
                    retry_after=str(math.ceil(remaining)),
                )

    async def check_ip(self, ip: str) -> None:
        """For endpoints that send email (forgot-password): one count per request, 429 once over budget."""
        if ip and await self.store.fail(f"mail:{ip}", WINDOW_SECONDS) > self._settings.ip_failures_per_window:
            raise TooManyRequests("too many requests from this address; try again later", retry_after="900")

    async def failed(self, account: str, ip: str) -> None:
        limits = self._settings
        count = await self.store.fail(f"acct:{account}", WINDOW_SECONDS * 4)
        if count >= limits.free_failures:
            exponent = min(count - limits.free_failures, 20)
            seconds = min(limits.max_lock_seconds, limits.base_lock_seconds * 2**exponent)
            await self.store.lock(f"acct:{account}", seconds)
        if ip and await self.store.fail(f"ip:{ip}", WINDOW_SECONDS) >= limits.ip_failures_per_window:
            await self.store.lock(f"ip:{ip}", WINDOW_SECONDS)

    async def succeeded(self, account: str) -> None:
        await self.store.clear(f"acct:{account}")

    async def reset(self, account: str) -> None:
        """A completed password reset: the account's failures and lock are forgotten (not the IP's)."""
        await self.store.clear(f"acct:{account}")
        await self.store.unlock(f"acct:{account}")

    async def check_factor(self, user_id: str) -> None:
        """429 while the account's second factor is locked."""
        remaining = await self.store.locked_for(f"mfa:{user_id}")
        if remaining > 0:
            raise TooManyRequests("too many wrong codes; try again later", retry_after=str(math.ceil(remaining)))

    async def factor_failed(self, user_id: str) -> bool:
        """Count a wrong second-factor code; True when this failure locked the factor for the first time."""
        limits = self._settings
        count = await self.store.fail(f"mfa:{user_id}", WINDOW_SECONDS * 4)
        if count < limits.free_failures:
            return False
        exponent = min(count - limits.free_failures, 20)
        await self.store.lock(f"mfa:{user_id}", min(limits.max_lock_seconds, limits.base_lock_seconds * 2**exponent))
        return count == limits.free_failures

    async def factor_succeeded(self, user_id: str) -> None:
        await self.store.clear(f"mfa:{user_id}")
