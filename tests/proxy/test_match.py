"""Route match (gateway/proxy/match.py) on the canonical path: unrouted paths are 404, the longest prefix wins,
stripping, paths with no single meaning are 400 unless a route opts out. On the bare data plane: no database."""

from __future__ import annotations

import json
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
