"""Rate limits per user and per org: 429 with Retry-After, in one process or shared through Redis."""

from __future__ import annotations

import json
import os
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import redis.asyncio

from tests.conftest import Gateway, Upstream, closed_port, gateway_settings, load_system_policy, serving

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _gateway(db_url: str, upstream: Upstream, limits: dict[str, Any]) -> AbstractAsyncContextManager[Gateway]:
    return serving(gateway_settings(db_url, upstream.url, rate_limits=limits, audit_log="off"), upstream)


async def _seed(gateway: Gateway) -> dict[str, str]:
    await gateway.org("acme")
    await gateway.org("globex")
    for email, org in (("a@acme.test", "acme"), ("b@acme.test", "acme"), ("c@globex.test", "globex")):
        await gateway.user(email, org=org, role="viewer")
    return {email[0]: await gateway.login(email) for email in ("a@acme.test", "b@acme.test", "c@globex.test")}


async def test_per_user_and_per_org_budgets(db_url: str, upstream: Upstream) -> None:
    """A user over budget gets 429 + Retry-After; users of one org share the org budget; other orgs don't."""
    await load_system_policy(db_url)
    async with _gateway(db_url, upstream, {"per_user_per_minute": 3, "per_org_per_minute": 5}) as gateway:
        tokens = await _seed(gateway)
        statuses = [(await gateway.call("GET", "/api/x", token=tokens["a"], org="acme"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers, body = await gateway.call("GET", "/api/x", token=tokens["a"], org="acme")
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert json.loads(body)["type"] == "urn:gateway:problem:too-many-requests"
        # b has its own user budget, but acme's org budget (5) is spent by a's 3 allowed + b's next 2
        # (a refused request is not counted, so a's two 429s spent nothing)
        b = [(await gateway.call("GET", "/api/x", token=tokens["b"], org="acme"))[0] for _ in range(3)]
        assert b == [200, 200, 429]
        assert (await gateway.call("GET", "/api/x", token=tokens["c"], org="globex"))[0] == 200


async def _redis_or_skip() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis.exceptions.RedisError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set GATEWAY_TEST_REDIS_URL): {exc}")
    finally:
        await client.aclose()


async def test_replicas_share_one_budget_through_redis(db_url: str, upstream: Upstream) -> None:
    """Two gateway processes on one Redis spend one user budget between them."""
    await _redis_or_skip()
    await load_system_policy(db_url)
    limits = {"per_user_per_minute": 4, "redis_url": REDIS_URL}
    async with _gateway(db_url, upstream, limits) as first, _gateway(db_url, upstream, limits) as second:
        tokens = await _seed(first)
        await second.runtime.refresh()
        statuses = []
        for replica in (first, second, first, second, first, second):
            statuses.append((await replica.call("GET", "/api/x", token=tokens["a"], org="acme"))[0])
        assert statuses == [200, 200, 200, 200, 429, 429]


async def test_unreachable_redis_lets_requests_through(db_url: str, upstream: Upstream) -> None:
    """The limit protects upstreams but is not authorization: with its store down, requests still pass."""
    await load_system_policy(db_url)
    limits = {"per_user_per_minute": 1, "redis_url": f"redis://127.0.0.1:{closed_port()}/0"}
    async with _gateway(db_url, upstream, limits) as gateway:
        tokens = await _seed(gateway)
        for _ in range(3):
            assert (await gateway.call("GET", "/api/x", token=tokens["a"], org="acme"))[0] == 200


async def test_per_key_budget(db_url: str, upstream: Upstream) -> None:
    """An API key has a budget of its own."""
    await load_system_policy(db_url)
    async with _gateway(db_url, upstream, {"per_key_per_minute": 2}) as gateway:
        await gateway.org("acme")
        await gateway.user("ci@acme.test", org="acme", role="viewer")
        key = await gateway.key("acme", "ci@acme.test")
        statuses = [(await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]


async def test_a_refused_request_spends_no_budget() -> None:
    """A key over its own budget does not drain its user's or its org's: refused requests count nowhere."""
    from gateway.counters import Counters
    from gateway.errors import TooManyRequests
    from gateway.proxy.limit import RateLimiter

    limiter = RateLimiter(Counters(), per_user=1000, per_org=50, per_key=5)
    outcomes = []
    for _ in range(40):
        try:
            await limiter.check("user-a", "acme", "k1")
            outcomes.append(200)
        except TooManyRequests:
            outcomes.append(429)
    assert outcomes == [200] * 5 + [429] * 35
    others = 0
    for _ in range(60):
        try:
            await limiter.check("user-b", "acme")
            others += 1
        except TooManyRequests:
            break
    assert others == 45, "the org's 50 minus the key's 5 that went through"
