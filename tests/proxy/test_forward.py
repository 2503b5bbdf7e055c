"""Forwarding (gateway/proxy/forward.py): the request as authorized reaches the upstream and the answer streams
back; refused, slow and broken upstreams; body limits; retries; pools; a client that goes away. On the bare data
plane: no database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import BareGateway, Upstream, bare_serving, closed_port
from tests.waiting import eventually


async def test_upstream_receives_verified_identity(bare: BareGateway) -> None:
    """The upstream gets X-Gateway-User/Org/Roles and the path, query and body exactly as authorized."""
    tokens = bare.tokens
    user_id = bare.runtime.services.tokens.verify(tokens["member"]).user_id
    status, _, _ = await bare.call(
        "POST",
        "/api/orders?limit=5&b=%20x",
        token=tokens["member"],
        org="acme",
        data=b'{"n": 1}',
        headers={"content-type": "application/json"},
    )
    assert status == 200
    seen = bare.upstream.last
    assert seen.method == "POST"
    assert seen.raw_path == "/api/orders?limit=5&b=%20x"
    assert seen.body == b'{"n": 1}'
    assert seen.header("X-Gateway-User") == user_id
    assert seen.header("X-Gateway-Org") == "acme"
    assert seen.header("X-Gateway-Roles") == "member"
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Authorization") is None, "the gateway's credential is not passed on"


async def test_public_route_needs_no_token(bare: BareGateway) -> None:
    """`public = true` routes skip authentication and authorization and keep the client's Authorization."""
    status, _, _ = await bare.call("GET", "/public/docs", headers={"Authorization": "Bearer opaque"})
    assert status == 200
    assert bare.upstream.last.header("Authorization") == "Bearer opaque"


async def test_upstream_down_is_502(bare: BareGateway) -> None:
    """A refused upstream connection is 502 problem+json."""
    tokens = bare.tokens
    status, _headers, body = await bare.call("GET", "/down/x", token=tokens["root"], org="acme")
    assert status == 502
    assert json.loads(body)["type"] == "urn:gateway:problem:bad-gateway"


async def test_slow_upstream_is_504(bare: BareGateway) -> None:
    """An upstream slower than the route's read timeout is 504 problem+json."""
    tokens = bare.tokens
    started = time.perf_counter()
    status, _, body = await bare.call("GET", "/api/slowish/slow", token=tokens["root"], org="acme")
    assert status == 504
    assert json.loads(body)["type"] == "urn:gateway:problem:gateway-timeout"
    assert time.perf_counter() - started < 3


async def test_response_streams_back(bare: BareGateway) -> None:
    """A multi-megabyte upstream response arrives whole."""
    tokens = bare.tokens
    size = 5 * 1024 * 1024 + 17
    status, _, body = await bare.call("GET", f"/api/download/{size}", token=tokens["viewer"], org="acme")
    assert status == 200
    assert len(body) == size


async def test_request_body_streams_upstream(bare: BareGateway) -> None:
    """A chunked multi-megabyte upload reaches the upstream byte for byte."""
    tokens = bare.tokens
    payload = bytes(range(256)) * 20000

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    status, _, _ = await bare.call("PUT", "/api/blob", token=tokens["member"], org="acme", data=chunks())
    assert status == 200
    assert bare.upstream.last.body == payload


async def test_body_over_the_route_limit_is_413(bare: BareGateway) -> None:
    """A declared or streamed body over max_body_bytes is 413 and never delivered whole upstream."""
    tokens = bare.tokens
    ok = await bare.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=b"x" * 1000)
    assert ok[0] == 200
    declared = await bare.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=b"x" * 1001)
    assert declared[0] == 413
    assert json.loads(declared[2])["type"] == "urn:gateway:problem:payload-too-large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 400

    before = len(bare.upstream.seen)
    streamed = await bare.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=chunks())
    assert streamed[0] == 413
    assert len(bare.upstream.seen) == before, "the upstream must not receive a truncated body as complete"
    big = await bare.call("POST", "/api/x", token=tokens["member"], org="acme", data=b"z" * 50_000)
    assert big[0] == 200, "other routes keep the default limit"


async def test_idempotent_requests_retry_a_refused_connection(upstream: Upstream, tmp_path: Path) -> None:
    """A GET whose upstream comes up during the retry back-off succeeds; a POST is never retried."""
    port = closed_port()
    routes = [{"prefix": "/late", "upstream": f"http://127.0.0.1:{port}", "retries": 2}]
    late = web.AppRunner(web.Application())
    try:
        async with bare_serving(upstream, tmp_path, routes=routes, audit_log="off") as gateway:
            tokens = gateway.tokens
            assert (await gateway.call("POST", "/late/x", token=tokens["member"], org="acme"))[0] == 502

            async def answer(_: web.Request) -> web.Response:
                return web.Response(text="late")

            async def come_up() -> None:
                # Time is what is under test: the upstream comes up a moment later, after the first attempt was
                # refused and during the back-off before the retry.
                await asyncio.sleep(0.02)
                late.app.router.add_get("/late/x", answer)
                await late.setup()
                await web.TCPSite(late, "127.0.0.1", port).start()

            started = asyncio.create_task(come_up())
            status, _, body = await gateway.call("GET", "/late/x", token=tokens["viewer"], org="acme")
            await started
            assert (status, body) == (200, b"late")
    finally:
        await late.cleanup()


async def test_client_disconnect_cancels_the_upstream_request(bare: BareGateway) -> None:
    """When the client goes away while the upstream works, the gateway stops waiting at once."""
    tokens = bare.tokens
    with pytest.raises(TimeoutError):
        async with bare.http.get(
            bare.url + "/api/x/slow",
            timeout=aiohttp.ClientTimeout(total=0.3),
            headers={"Authorization": f"Bearer {tokens['viewer']}", "X-Org": "acme"},
        ):
            pass
    events = await eventually(
        lambda: [e for e in bare.audit_events() if e["path"] == "/api/x/slow"],
        within=2,
        every=0.05,
        what="no audit line for the abandoned request",
    )
    assert events[0]["status"] == 499
    assert events[0]["reason"] == "client disconnected"
    assert events[0]["duration_ms"] < 1500, "the gateway kept waiting for the upstream"


async def test_route_with_its_own_pool(bare: BareGateway) -> None:
    """pool_size on a route gives it a separate connection pool of that size."""
    tokens = bare.tokens
    assert (await bare.call("GET", "/pooled/x", token=tokens["viewer"], org="acme"))[0] == 200
    assert bare.runtime.services.pools["/pooled"].connector is not None
    assert bare.runtime.services.pools["/pooled"].connector.limit == 1
    assert bare.runtime.services.http.connector is not None
    assert bare.runtime.services.http.connector.limit == 256
