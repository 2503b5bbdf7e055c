"""Stage 3b, rate limit: requests per minute per user, per organization and per API key; over budget is 429 +
Retry-After.

Counted in sliding one-minute windows (`gateway.counters`): in this process, or in Redis so that every replica
spends the same budget. A request refused here is not counted. If Redis cannot be reached the request is let
through and a warning is logged: the limit protects upstreams, it does not decide who may do what.
"""

from __future__ import annotations

from limits import RateLimitItemPerMinute

from gateway.counters import Counters, Window
from gateway.errors import TooManyRequests


class RateLimiter:
    def __init__(
        self, counters: Counters, *, per_user: int | None, per_org: int | None, per_key: int | None = None
    ) -> None:
        def budget(kind: str, per_minute: int | None) -> tuple[str, Window, int] | None:
            if not per_minute:
                return None
            return kind, counters.window(RateLimitItemPerMinute(per_minute), "sliding", "rate limit"), per_minute

        self._user = budget("user", per_user)
        self._org = budget("org", per_org)
        self._key = budget("key", per_key)

    @property
    def active(self) -> bool:
        return bool(self._user or self._org or self._key)

    async def check(self, user_id: str, org: str, key_id: str | None = None) -> None:
        """Refuse (429) when any budget that applies is spent, counting nothing; otherwise count the request in
        every one of them. A refused request costs no budget (two requests racing at the very edge may both
        pass the test: the sliding window is approximate there anyway)."""
        applicable = [
            (budget, name)
            for budget, name in ((self._user, user_id), (self._org, org), (self._key, key_id))
            if budget is not None and name is not None
        ]
        for (kind, window, per_minute), name in applicable:
            if await window.spent(kind, name):
                raise TooManyRequests(
                    f"more than {per_minute} requests per minute for this {kind}",
                    retry_after=str(await window.retry_after(kind, name)),
                )
        for (kind, window, _), name in applicable:
            await window.hit(kind, name)
