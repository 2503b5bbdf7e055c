"""Route match (gateway/proxy/match.py) on the canonical path and the host: unrouted paths are 404, host routes
win, then the longest prefix, stripping, paths with no single meaning are 400 unless a route opts out, malformed
hosts are 400 where hosts matter. On the bare data plane: no database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import BareGateway, Upstream, bare_serving

PROBLEM = "application/problem+json"


async def test_unknown_route_is_404_and_never_forwarded(bare: BareGateway) -> None:
    """Paths outside every configured prefix (including look-alike prefixes) are 404 (the gateway's own
    unrouted paths: tests/proxy/test_pipeline.py)."""
    tokens = bare.tokens
    for path in ("/nothing", "/apix", "/ap"):
        status, headers, _body = await bare.call("GET", path, token=tokens["root"], org="acme")
        assert status == 404, path
        assert headers["Content-Type"].startswith(PROBLEM), path
    assert bare.upstream.seen == []


async def test_longest_prefix_wins_and_strip_prefix(bare: BareGateway) -> None:
    """`/api/slowish` beats `/api`; a stripping route forwards the rest under the upstream's base path."""
    tokens = bare.tokens
    status, _, _ = await bare.call("GET", "/stripped/a/b?q=1", token=tokens["viewer"], org="acme")
    assert status == 200
    assert bare.upstream.last.raw_path == "/base/a/b?q=1"
    status, _, _ = await bare.call("GET", "/stripped", token=tokens["viewer"], org="acme")
    assert bare.upstream.last.raw_path == "/base/"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/api/a%2Fb",
        "/api/%2e%2e/admin",
        "/api/a%00b",
        "/api/a;b=1",
        "/api/a%zz",
        "/api/..%5cadmin",
        "/../api/x",
        "/api/%252e%252e/admin",  # a second decoding would climb
        "/api/a%252fb",
        "/api/a%25255Cb",
        "/api/%EF%BC%8E%EF%BC%8E/admin",  # full-width dots: '..' after NFKC
        "/api/%E2%80%A5/admin",  # two-dot leader
        "/api/a%EF%BC%8Fb",  # full-width solidus
        "/api/%EF%BD%81dmin/secret",  # full-width 'a': /api/admin/secret after NFKC
        "/api/%EF%AC%81les",  # the ligature 'fi': /api/files
        "/api/v%C2%B2/x",  # superscript two: /api/v2/x
        "/auth/%252e%252e/admin",  # the control plane's paths too
    ],
)
async def test_ambiguous_paths_are_400(bare: BareGateway, raw_path: str) -> None:
    """Paths with no single canonical meaning, or that a second decoding or Unicode normalisation upstream
    would read as another path (a dot segment, a separator, ASCII letters the policy never saw), are refused
    before any other stage."""
    tokens = bare.tokens
    status, _, body = await bare.call("GET", raw_path, token=tokens["root"], org="acme")
    assert status == 400
    assert json.loads(body)["type"] == "urn:gateway:problem:invalid-path"
    assert bare.upstream.seen == []


async def test_a_route_may_accept_paths_a_second_reading_would_change(upstream: Upstream, tmp_path: Path) -> None:
    """With strict_paths = false, a route forwards double-encoded and NFKC-ambiguous paths as they are; other
    routes keep refusing them."""
    routes = [
        {"prefix": "/lenient", "upstream": upstream.url, "public": True, "strict_paths": False},
        {"prefix": "/public", "upstream": upstream.url, "public": True},
    ]
    async with bare_serving(upstream, tmp_path, routes=routes, audit_log="off") as lenient:
        assert (await lenient.call("GET", "/lenient/a%252fb/%EF%BC%8E"))[0] == 200
        assert upstream.last.raw_path == "/lenient/a%252fb/%EF%BC%8E"
        assert (await lenient.call("GET", "/public/a%252fb"))[0] == 400


async def test_authorized_path_is_the_forwarded_path(bare: BareGateway) -> None:
    """Dot segments and double slashes are resolved once; Casbin and the upstream see the same bytes."""
    tokens = bare.tokens
    status, _, _ = await bare.call("GET", "/api//orders/./7/../8", token=tokens["viewer"], org="acme")
    assert status == 200
    assert bare.upstream.last.raw_path == "/api/orders/8"
    status, _, _ = await bare.call("GET", "/api/caf%c3%a9/%41", token=tokens["viewer"], org="acme")
    assert status == 200
    assert bare.upstream.last.raw_path == "/api/caf%C3%A9/A"
    # Text whose compatibility form stays outside ASCII is not ambiguous: Japanese, full- and half-width kana.
    for path in ("/api/%E3%83%86%E3%82%B9%E3%83%88", "/api/%EF%BD%B1"):
        status, _, _ = await bare.call("GET", path, token=tokens["viewer"], org="acme")
        assert status == 200, path
        assert bare.upstream.last.raw_path == path


# -- hosts ----------------------------------------------------------------------------------------------------


def host_routes(url: str) -> list[dict[str, object]]:
    """Each route sends to its own base path on the recording upstream, so the path seen names the route."""
    return [
        {"prefix": "/", "upstream": url + "/any"},
        {"prefix": "/api", "upstream": url + "/any-api"},
        {"prefix": "/", "upstream": url + "/exact", "hosts": ["api.example.com", "API2.example.com"]},
        {"prefix": "/v2", "upstream": url + "/exact-v2", "hosts": ["api.example.com"]},
        {"prefix": "/", "upstream": url + "/wild", "hosts": ["*.example.com"]},
        {"prefix": "/", "upstream": url + "/apps", "hosts": ["*.apps.example.com"]},
        {"prefix": "/v2", "upstream": url + "/exact-public", "hosts": ["public.example.com"], "public": True},
    ]


@pytest.fixture
async def hosted(upstream: Upstream, tmp_path: Path) -> AsyncIterator[BareGateway]:
    """A bare data plane whose route table has routes by host (host_routes)."""
    async with bare_serving(upstream, tmp_path, routes=host_routes(upstream.url)) as gateway:
        yield gateway


@pytest.mark.parametrize(
    ("host", "path", "seen"),
    [
        pytest.param("api.example.com", "/api/x", "/exact/api/x", id="host-route-beats-longer-hostless-prefix"),
        pytest.param("api.example.com", "/v2/x", "/exact-v2/v2/x", id="then-longest-prefix-on-that-host"),
        pytest.param("api2.example.com", "/v2/x", "/exact/v2/x", id="second-host-of-a-route"),
        pytest.param("API.Example.COM.:8443", "/v2/x", "/exact-v2/v2/x", id="upper-case-trailing-dot-port"),
        pytest.param("other.example.com", "/v2/x", "/wild/v2/x", id="wildcard"),
        pytest.param("acme.apps.example.com", "/x", "/apps/x", id="wildcard-on-the-longer-suffix"),
        pytest.param("a.b.example.com", "/api/x", "/any-api/api/x", id="wildcard-is-one-label-only"),
        pytest.param("example.com", "/x", "/any/x", id="wildcard-never-the-apex"),
        pytest.param("unknown.test", "/api/x", "/any-api/api/x", id="other-hosts-hostless-longest-prefix"),
        pytest.param("127.0.0.1", "/x", "/any/x", id="address"),
        pytest.param("public.example.com", "/v2/x", "/exact-public/v2/x", id="exact-host-public-route"),
        pytest.param("public.example.com", "/x", "/wild/x", id="exact-host-prefix-miss-falls-to-wildcard"),
    ],
)
async def test_routes_with_hosts_win_then_the_longest_prefix(
    hosted: BareGateway, host: str, path: str, seen: str
) -> None:
    """An exact host beats a wildcard (one leading label), a wildcard beats a route without hosts; within them
    the longest prefix wins; a host no route names goes by path alone. Hosts compare without case, port or
    trailing dot."""
    status, _, _ = await hosted.call("GET", path, token=hosted.tokens["viewer"], org="acme", headers={"Host": host})
    assert status == 200
    assert hosted.upstream.last.raw_path == seen


async def test_a_route_name_carries_its_hosts(hosted: BareGateway) -> None:
    """Routes sharing a prefix are told apart in audit lines (and metrics, pools) by their hosts."""
    await hosted.call("GET", "/v2/x", token=hosted.tokens["viewer"], org="acme", headers={"Host": "api.example.com"})
    await hosted.call("GET", "/v2/x", token=hosted.tokens["viewer"], org="acme", headers={"Host": "x.test"})
    routes = [event["route"] for event in hosted.audit_events() if event["path"] == "/v2/x"]
    assert routes == ["api.example.com/v2", "/"]


async def _raw(gateway: BareGateway, request: bytes) -> bytes:
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(b"exa mple.com", id="space"),
        pytest.param(b"api..example.com", id="empty-label"),
        pytest.param(b"api.example.com:http", id="port"),
        pytest.param("b\u00fccher.example".encode(), id="raw-utf8"),
        pytest.param(b"api.example.com, evil.example.com", id="list"),
        pytest.param(b"user@api.example.com", id="userinfo"),
    ],
)
async def test_a_malformed_host_is_a_400_where_routes_depend_on_hosts(hosted: BareGateway, host: bytes) -> None:
    """When some route matches by host, a Host that is not a host name is refused (problem+json), not
    guessed at; nothing is forwarded."""
    request = b"GET /api/x HTTP/1.1\r\nHost: " + host + b"\r\nX-Org: acme\r\n"
    request += f"Authorization: Bearer {hosted.tokens['viewer']}\r\nConnection: close\r\n\r\n".encode()
    answer = await _raw(hosted, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"urn:gateway:problem:malformed-host" in answer
    assert hosted.upstream.seen == []


async def test_without_host_routes_the_host_is_not_read(bare: BareGateway) -> None:
    """A route table without hosts (or host orgs) routes by path exactly as before: even a Host that is not a
    host name is forwarded."""
    request = b"GET /api/x HTTP/1.1\r\nHost: exa mple\r\nX-Org: acme\r\n"
    request += f"Authorization: Bearer {bare.tokens['viewer']}\r\nConnection: close\r\n\r\n".encode()
    assert (await _raw(bare, request)).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("trusted", "seen"),
    [
        pytest.param([], "/any-api/api/x", id="untrusted-peer-x-forwarded-host-ignored"),
        pytest.param(["127.0.0.1"], "/exact/api/x", id="trusted-proxy-x-forwarded-host-believed"),
    ],
)
async def test_x_forwarded_host_is_believed_only_from_trusted_proxies(
    upstream: Upstream, tmp_path: Path, trusted: list[str], seen: str
) -> None:
    """A client cannot pick a host route by sending X-Forwarded-Host; a trusted proxy names the host with it."""
    routes = host_routes(upstream.url)
    async with bare_serving(upstream, tmp_path, routes=routes, trusted_proxies=trusted) as gateway:
        headers = {"Host": "unknown.test", "X-Forwarded-Host": "api.example.com"}
        status, _, _ = await gateway.call("GET", "/api/x", token=gateway.tokens["viewer"], org="acme", headers=headers)
        assert status == 200
        assert upstream.last.raw_path == seen
