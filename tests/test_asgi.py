"""The front door (gateway/asgi.py): one canonical path, the data plane without Litestar, one control-plane
application with one OpenAPI document, and the management listener split."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.asgi import create_gateway
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, start_gateway


async def _acme(gateway: Gateway) -> str:
    await gateway.org("acme")
    await gateway.user("v@acme.test", org="acme", role="viewer")
    return await gateway.login("v@acme.test")


async def test_no_litestar_code_runs_on_the_data_plane(gateway: Gateway) -> None:
    """Proxied requests (allowed, denied, unauthenticated, unrouted, public, malformed) and forward-auth
    decisions run no function of the litestar package; an /auth request does (the profiler sees it)."""
    token = await _acme(gateway)
    modules: set[str] = set()

    def profile(frame: FrameType, event: str, _: Any) -> None:
        if event == "call":
            modules.add(frame.f_globals.get("__name__", ""))

    async def traced(method: str, path: str, **options: Any) -> int:
        sys.setprofile(profile)
        try:
            return (await gateway.call(method, path, **options))[0]
        finally:
            sys.setprofile(None)

    assert await traced("GET", "/api/x", token=token, org="acme") == 200
    assert await traced("DELETE", "/api/x", token=token, org="acme") == 403
    assert await traced("GET", "/api/x", org="acme") == 401
    assert await traced("GET", "/nowhere") == 404
    assert await traced("GET", "/public/x") == 200
    assert await traced("GET", "/api/%2e%2e/admin") == 400
    assert await traced("GET", "/authz/forward") == 403  # no trusted proxies: refused, but decided here
    assert any(name.startswith("gateway.proxy") for name in modules)
    assert not [name for name in modules if name.split(".")[0] == "litestar"]
    assert await traced("GET", "/auth/me", token=token) == 200
    assert any(name.split(".")[0] == "litestar" for name in modules), "the profiler must see the control plane"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/auth/./me", 200),  # a dot segment resolves before routing
        ("/auth//me", 200),
        ("/admin/../auth/me", 200),  # the canonical form decides which plane, not the raw target
        ("/auth/%2e%2e/admin/orgs", 400),
        ("/auth%2fme", 400),
        ("/auth/me;x=1", 400),
        ("/auth/no-such-endpoint", 404),
    ],
)
async def test_the_control_plane_routes_on_the_canonical_path(gateway: Gateway, path: str, status: int) -> None:
    """The gateway's own paths are made canonical once, like proxied ones, before Litestar routes them."""
    token = await _acme(gateway)
    got, headers, body = await gateway.call("GET", path, token=token)
    assert got == status, body
    if status >= 400:
        assert headers["content-type"].startswith("application/problem+json")


async def test_one_openapi_document_describes_both_namespaces_and_their_problems(gateway: Gateway) -> None:
    """GET /auth/schema/openapi.json covers /auth, /admin, health, metrics and JWKS; error responses are
    problem+json documents."""
    status, _, body = await gateway.call("GET", "/auth/schema/openapi.json")
    assert status == 200

    document = json.loads(body)
    paths = document["paths"]
    for path in (
        "/auth/login",
        "/admin/orgs/{org}/members",
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
    ):
        assert path in paths, path
    login = paths["/auth/login"]["post"]["responses"]
    assert {"401", "422", "429"} <= set(login)
    assert "application/problem+json" in login["429"]["content"]
    rename = paths["/admin/orgs/{org}"]["patch"]["responses"]
    assert {"401", "403", "404", "409", "412", "422"} <= set(rename)
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def split(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway whose /admin and /metrics are on a management listener; yields it and that listener's URL."""
    await load_system_policy(db_url)
    management = _listening()
    port = management.getsockname()[1]
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), admin_listen=f"127.0.0.1:{port}"
    )
    front = create_gateway(settings, management_ports=frozenset({port}))
    url, server, task = await start_gateway(front, also=(management,))
    try:
        async with aiohttp.ClientSession() as http:
            yield (
                Gateway(url=url, http=http, runtime=front.runtime, upstream=upstream, front=front),
                (f"http://127.0.0.1:{port}"),
            )
    finally:
        server.should_exit = True
        await task


async def test_the_management_listener_takes_admin_and_metrics(split: tuple[Gateway, str]) -> None:
    """With admin_listen, /admin and /metrics answer only there (404 on the public port); the public port keeps
    /auth, JWKS and proxying; the probes answer on both; the management port proxies nothing."""
    gateway, management = split
    await gateway.org("acme")
    await gateway.user("root@x.test", superadmin=True)
    token = await gateway.login("root@x.test")
    auth = {"Authorization": f"Bearer {token}"}

    async def status(base: str, path: str, **headers: str) -> int:
        async with gateway.http.get(URL(base + path, encoded=True), headers=headers) as response:
            if response.status == 404:
                assert response.headers["content-type"].startswith("application/problem+json")
            return response.status

    assert await status(gateway.url, "/admin/orgs", **auth) == 404
    assert await status(gateway.url, "/metrics") == 404
    assert await status(management, "/admin/orgs", **auth) == 200
    assert await status(management, "/admin/orgs") == 401
    assert await status(management, "/metrics") == 200
    assert await status(gateway.url, "/auth/me", **auth) == 200
    assert await status(gateway.url, "/.well-known/jwks.json") == 200
    assert await status(management, "/auth/me", **auth) == 404
    assert await status(management, "/api/x", **auth, **{"X-Org": "acme"}) == 404
    assert await status(gateway.url, "/api/x", **auth, **{"X-Org": "acme"}) == 200
    for base in (gateway.url, management):
        assert await status(base, "/healthz") == 200
        assert await status(base, "/readyz") == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_answer_head_like_get(gateway: Gateway, path: str) -> None:
    """HEAD on /healthz, /readyz and /metrics: the GET's status, type and length, no body; the metrics' type
    names its charset once."""
    got, get_headers, body = await gateway.call("GET", path)
    assert body
    headed, head_headers, empty = await gateway.call("HEAD", path)
    assert got == headed == 200
    assert empty == b""
    assert head_headers["content-type"] == get_headers["content-type"]
    assert get_headers["content-type"].count("charset") <= 1
    if path == "/metrics":
        assert get_headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    else:
        assert int(head_headers["content-length"]) > 0
