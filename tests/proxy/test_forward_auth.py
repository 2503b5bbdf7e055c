"""Forward-auth mode: decisions for requests another proxy describes, directly and through a real nginx."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.asgi import create_gateway
from tests.conftest import (
    Gateway,
    Upstream,
    closed_port,
    gateway_settings,
    load_system_policy,
    serving,
    start_gateway,
)


@pytest.fixture
async def fronted(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway that trusts 127.0.0.1 as a fronting proxy, with acme's viewer and member seeded."""
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url, upstream.url, trusted_proxies=["127.0.0.1"], audit_log=str(tmp_path / "audit.jsonl")
    )
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("viewer@acme.test", org="acme", role="viewer")
        yield gateway


async def _ask(
    gateway: Gateway, method: str, uri: str, token: str | None, org: str | None = "acme", **extra: str
) -> tuple[int, dict[str, str]]:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **extra}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if org:
        headers["X-Org"] = org
    async with gateway.http.get(gateway.url + "/authz/forward", headers=headers) as response:
        return response.status, response.headers.copy()


async def test_forward_auth_answers_like_the_proxy(fronted: Gateway) -> None:
    """200 with identity headers when allowed; 401 without a token; 403 when denied or in another org."""
    token = await fronted.login("viewer@acme.test")
    status, headers = await _ask(fronted, "GET", "/orders/7?x=1", token)
    assert status == 200
    assert headers["X-Gateway-Org"] == "acme"
    assert headers["X-Gateway-Roles"] == "viewer"
    assert (await _ask(fronted, "DELETE", "/orders/7", token))[0] == 403
    assert (await _ask(fronted, "GET", "/orders/7", token, org="globex"))[0] == 403
    status, headers = await _ask(fronted, "GET", "/orders/7", None)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert fronted.upstream.seen == [], "forward-auth never forwards"


async def test_forward_auth_applies_canonical_paths(fronted: Gateway) -> None:
    """The described URI goes through the same canonical form. Ambiguous ones, an unknown method and a missing
    org are refused with 403 (nginx's auth_request would turn a 400 into a 500), the reason in X-Gateway-Reason
    and in the audit line."""
    token = await fronted.login("viewer@acme.test")
    for uri in ("/a%2fb", "/a/%2e%2e/b", "/a;x", "/a#frag", "/a%00"):
        status, headers = await _ask(fronted, "GET", uri, token)
        assert (status, headers.get("X-Gateway-Reason")) == (403, "invalid-path"), uri
    assert (await _ask(fronted, "GET", "/a/./b/../c", token))[0] == 200
    status, headers = await _ask(fronted, "FETCH", "/a", token)
    assert (status, headers.get("X-Gateway-Reason")) == (403, "bad-request")
    status, headers = await _ask(fronted, "GET", "/a", token, org=None)
    assert (status, headers.get("X-Gateway-Reason")) == (403, "bad-request")
    refused = [event for event in fronted.audit_events() if event["route"] == "/authz/forward" and not event["granted"]]
    assert refused[0]["reason"].startswith("invalid-path: ")
    assert refused[-1]["subject"].startswith("user:"), "the caller is named once known"


async def test_forward_auth_denials_name_the_caller_and_reach_the_metrics(fronted: Gateway) -> None:
    """A denied decision's audit line has its subject and org; decisions are counted in /metrics."""
    token = await fronted.login("viewer@acme.test")
    assert (await _ask(fronted, "DELETE", "/orders/7", token))[0] == 403
    assert (await _ask(fronted, "GET", "/orders/7", token))[0] == 200
    denied = [event for event in fronted.audit_events() if event["status"] == 403][-1]
    assert denied["subject"].startswith("user:") and denied["org"] == "acme" and denied["decision_id"]
    async with fronted.http.get(fronted.url + "/metrics") as response:
        text = await response.text()
    assert 'gateway_requests_total{decision="denied",route="/authz/forward",status="403"} 1.0' in text
    assert 'gateway_requests_total{decision="allowed",route="/authz/forward",status="200"} 1.0' in text


async def test_forward_auth_only_answers_trusted_proxies(fronted: Gateway, upstream: Upstream, db_url: str) -> None:
    """A gateway without trusted proxies refuses to judge described requests (spoofed X-Forwarded-Uri)."""
    token = await fronted.login("viewer@acme.test")
    app = create_gateway(gateway_settings(db_url, upstream.url, audit_log="off"))
    url, server, task = await start_gateway(app)
    try:
        async with fronted.http.get(
            url + "/authz/forward",
            headers={
                "X-Forwarded-Method": "GET",
                "X-Forwarded-Uri": "/x",
                "Authorization": f"Bearer {token}",
                "X-Org": "acme",
            },
        ) as response:
            assert response.status == 403
    finally:
        server.should_exit = True
        await task


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_gateway;
            auth_request_set $gw_user $upstream_http_x_gateway_user;
            auth_request_set $gw_roles $upstream_http_x_gateway_roles;
            proxy_set_header X-Gateway-User $gw_user;
            proxy_set_header X-Gateway-Roles $gw_roles;
            proxy_set_header Authorization "";
            proxy_pass {upstream};
        }}
        location = /_gateway {{
            internal;
            proxy_pass {gateway}/authz/forward;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Forwarded-Uri $request_uri;
        }}
    }}
}}
"""


async def test_nginx_auth_request_in_front_of_an_upstream(fronted: Gateway, tmp_path: Path) -> None:
    """A real nginx with auth_request asks the gateway, and forwards only what the gateway allowed."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (.ci/run installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    port = closed_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, upstream=fronted.upstream.url, gateway=fronted.url))
    process = await asyncio.create_subprocess_exec(
        nginx,
        "-c",
        str(conf),
        "-e",
        str(tmp_path / "error.log"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        token = await fronted.login("viewer@acme.test")
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                async with fronted.http.get(base + "/ping") as response:
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        auth = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        async with fronted.http.get(base + "/reports/1?full=1", headers=auth) as response:
            assert response.status == 200
        seen = fronted.upstream.last
        assert seen.raw_path == "/reports/1?full=1"
        assert seen.header("X-Gateway-Roles") == "viewer"
        assert seen.header("Authorization") is None
        before = len(fronted.upstream.seen)
        async with fronted.http.delete(base + "/reports/1", headers=auth) as response:
            assert response.status == 403
        async with fronted.http.get(base + "/reports/1") as response:
            assert response.status == 401
        assert len(fronted.upstream.seen) == before, "nginx forwarded nothing the gateway refused"
    finally:
        process.send_signal(signal.SIGQUIT)
        await asyncio.wait_for(process.wait(), 10)
