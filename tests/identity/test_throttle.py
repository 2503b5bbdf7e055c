"""The login throttle's escalation outlives the hour of failures that started it: a patient attacker who waits
out each lock keeps meeting the longest lock, not a fresh allowance."""

from __future__ import annotations

import pytest

from gateway.counters import Counters
from gateway.errors import TooManyRequests
from gateway.identity.throttle import LoginThrottle
from gateway.settings import Login


async def test_the_escalation_is_remembered_after_the_failures_age_out() -> None:
    counters = Counters()
    throttle = LoginThrottle(counters, Login(free_failures=3, base_lock_seconds=30, max_lock_seconds=120))
    for _ in range(3):
        await throttle.failed("ann@example.test", "")
    assert 29 < await counters.locked_for("acct/ann@example.test") <= 30
    # An hour later the failures have left their window (cleared here), and the lock has ended (lifted here):
    # the next failure alone locks again, for twice as long, then the longest lock, and stays there.
    for expected in (60, 120, 120):
        await throttle._failures.clear("acct", "ann@example.test")
        await counters.unlock("acct/ann@example.test")
        await throttle.failed("ann@example.test", "")
        assert expected - 1 < await counters.locked_for("acct/ann@example.test") <= expected
    with pytest.raises(TooManyRequests):
        await throttle.check("ann@example.test", "")
    # A success (after the lock) forgets it all: the full allowance again.
    await counters.unlock("acct/ann@example.test")
    await throttle.succeeded("ann@example.test")
    await throttle.failed("ann@example.test", "")
    assert await counters.locked_for("acct/ann@example.test") == 0
