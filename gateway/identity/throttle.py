"""Login throttling: per account and per client IP, with a growing lockout; 429 with Retry-After.

Failures are counted for the email as typed (normalised), whether or not an account has it, so throttling
answers the same for known and unknown addresses. After `login.free_failures` failures within an hour an account
is locked for `base_lock_seconds`, doubling with each further failure up to `max_lock_seconds` (15 min), and the
escalation is remembered for a day from its first lock (every failure in it locks again, longer); during the
lock even the right password gets 429. A success clears the account's count and escalation. Failures are
counted in moving windows (an account's over the last hour, an IP's over the last 15 minutes;
`gateway.counters`), in this process or in Redis when `rate_limits.redis_url` is set, so that every replica
shares them; if Redis cannot be reached, logins are not throttled and a warning is logged. Password reset never
consults this: a locked-out user can always reset, and a completed reset (it proves the mailbox) clears the
account's count and lock; the per-IP limits stay.

Second factors are counted the same way, per account (`mfa/<user id>`), across challenges: with the password,
an attacker could otherwise open challenge after challenge (each dies after 5 wrong codes) and guess codes
without end (RFC 4226 §7.3, applied to TOTP by RFC 6238 §5.1). The lock grows the same way; the user is told
by email when it first applies.
"""

from __future__ import annotations

import math

from limits import RateLimitItemPerHour, RateLimitItemPerMinute

from gateway.counters import Counters
from gateway.errors import TooManyRequests
from gateway.settings import Login

IP_WINDOW_MINUTES = 15
STRIKES_SECONDS = 86_400
"""How long an account's lock escalation is remembered, from its first lock."""
# The lock stops growing after this many doublings (it is capped by max_lock_seconds long before).
_MAX_DOUBLINGS = 20


class LoginThrottle:
    """Asked before a password is checked (`check`) and told the outcome (`failed`, `succeeded`)."""

    def __init__(self, counters: Counters, settings: Login) -> None:
        self._counters = counters
        self._settings = settings
        # An account's (or a second factor's) failures over the last hour, up to the free allowance.
        self._failures = counters.window(RateLimitItemPerHour(settings.free_failures), "moving", "login throttle")
        per_ip = RateLimitItemPerMinute(settings.ip_failures_per_window, IP_WINDOW_MINUTES)
        self._ip_failures = counters.window(per_ip, "moving", "login throttle")
        self._mail = counters.window(per_ip, "moving", "login throttle")

    async def check(self, account: str, ip: str) -> None:
        """429 while the account is locked or the IP has spent its failures."""
        remaining = await self._counters.locked_for(f"acct/{account}")
        if remaining > 0:
            raise _locked(math.ceil(remaining))
        if ip and await self._ip_failures.spent("ip", ip):
            raise _locked(await self._ip_failures.retry_after("ip", ip))

    async def check_ip(self, ip: str) -> None:
        """For endpoints that send email (forgot-password): one count per request, 429 once over budget."""
        if ip and not await self._mail.hit("mail", ip):
            raise TooManyRequests(
                "too many requests from this address; try again later",
                retry_after=str(await self._mail.retry_after("mail", ip)),
            )

    async def failed(self, account: str, ip: str) -> None:
        await self._count_failure("acct", account)
        if ip:
            await self._ip_failures.hit("ip", ip)

    async def succeeded(self, account: str) -> None:
        await self._forget("acct", account)

    async def reset(self, account: str) -> None:
        """A completed password reset: the account's failures and lock are forgotten (not the IP's)."""
        await self._forget("acct", account)
        await self._counters.unlock(f"acct/{account}")

    async def check_factor(self, user_id: str) -> None:
        """429 while the account's second factor is locked."""
        remaining = await self._counters.locked_for(f"mfa/{user_id}")
        if remaining > 0:
            raise TooManyRequests("too many wrong codes; try again later", retry_after=str(math.ceil(remaining)))

    async def factor_failed(self, user_id: str) -> bool:
        """Count a wrong second-factor code; True when this failure locked the factor for the first time."""
        return await self._count_failure("mfa", user_id) == 1

    async def factor_succeeded(self, user_id: str) -> None:
        await self._forget("mfa", user_id)

    async def _count_failure(self, kind: str, name: str) -> int:
        """Count one failure. From `free_failures` failures within the hour on, or at once while an escalation
        is remembered, lock: the base lock doubled per lock already given (`strikes`, remembered for a day
        from the first, so a patient attacker stays at the longest lock instead of starting over each time
        the hour's failures age out). Returns the strike this failure made (0: no lock)."""
        await self._failures.hit(kind, name)
        limits = self._settings
        escalating = await self._counters.get(f"strikes/{kind}/{name}") > 0
        if not escalating and await self._failures.count(kind, name) < limits.free_failures:
            return 0
        strikes = await self._counters.incr(f"strikes/{kind}/{name}", STRIKES_SECONDS)
        doublings = min(max(strikes - 1, 0), _MAX_DOUBLINGS)
        await self._counters.lock(
            f"{kind}/{name}", min(limits.max_lock_seconds, limits.base_lock_seconds * 2**doublings)
        )
        return strikes

    async def _forget(self, kind: str, name: str) -> None:
        await self._failures.clear(kind, name)
        await self._counters.clear(f"strikes/{kind}/{name}")


def _locked(retry_after: int) -> TooManyRequests:
    return TooManyRequests(
        "too many failed logins; try again later or reset the password", retry_after=str(retry_after)
    )
