"""What reaches the upstream of the request's headers, and what comes back (gateway/proxy/headers.py): the
client's own headers and the gateway's, never hop-by-hop, spoofed identity, forwarding or rewrite headers; request
ids; sizes. On the bare data plane: no database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import BareGateway, Upstream, bare_serving


async def _raw(bare: BareGateway, request: bytes) -> bytes:
    """Send `request` byte for byte and read the whole answer (the connection is closed by the request)."""
    host, port = bare.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_the_upstream_gets_only_the_clients_headers_and_the_gateways(bare: BareGateway) -> None:
    """Nothing is added on the client's behalf: no Accept, Accept-Encoding or User-Agent it did not send (an
    Accept-Encoding would bring back a compressed body), and a body without a Content-Type gets none."""
    tokens = bare.tokens
    for request in (
        f"GET /api/bare HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
        "Connection: close\r\n\r\n",
        f"POST /api/bare HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
        "Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    ):
        assert (await _raw(bare, request.encode())).startswith(b"HTTP/1.1 200")
        seen = bare.upstream.last
        added = seen.names() - {"host", "x-org", "x-gateway-user", "x-gateway-org", "x-gateway-roles", "x-request-id"}
        added -= {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
        expected = {"content-length"} if seen.method == "POST" else set()
        assert added == expected, seen.headers
    assert bare.upstream.last.body == b"hello"


async def test_client_sent_identity_headers_never_reach_upstream(bare: BareGateway) -> None:
    """Spoofed X-Gateway-* headers, in any case or with underscores, are dropped before forwarding."""
    tokens = bare.tokens
    spoof = {
        "X-Gateway-User": "attacker",
        "x-gateway-org": "globex",
        "X-GATEWAY-ROLES": "superadmin",
        "X-Gateway-Extra": "1",
    }
    status, _, _ = await bare.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=spoof)
    assert status == 200
    seen = bare.upstream.last
    values = [v for k, v in seen.headers if k.lower().replace("_", "-").startswith("x-gateway-")]
    user = seen.header("X-Gateway-User")
    assert user is not None
    assert sorted(values) == sorted([user, "acme", "viewer"])
    assert "attacker" not in values
    assert "superadmin" not in values
    # public routes never carry identity either
    status, _, _ = await bare.call("GET", "/public/x", headers=spoof)
    assert status == 200
    assert not [k for k, _ in bare.upstream.last.headers if k.lower().replace("_", "-").startswith("x-gateway")]


async def test_hop_by_hop_headers_are_removed_both_ways(bare: BareGateway) -> None:
    """Connection, Keep-Alive, TE, Upgrade and headers named in Connection are not forwarded or returned."""
    tokens = bare.tokens
    status, headers, _ = await bare.call(
        "GET",
        "/api/x",
        token=tokens["viewer"],
        org="acme",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "X-Keep": "yes",
        },
    )
    assert status == 200
    names = bare.upstream.last.names()
    assert {"x-drop-me", "te", "proxy-authorization"}.isdisjoint(names)
    assert "x-keep" in names
    assert bare.upstream.last.header("X-Forwarded-For") == "127.0.0.1"
    # the upstream answered with Connection: x-secret-hop and Keep-Alive; neither comes back
    assert "X-Secret-Hop" not in headers
    assert "Keep-Alive" not in headers
    assert headers["X-Upstream"] == "yes"


async def test_spoofed_forwarded_headers_are_replaced(bare: BareGateway) -> None:
    """X-Forwarded-For from the client is not trusted: the gateway writes the address it saw."""
    tokens = bare.tokens
    await bare.call(
        "GET",
        "/api/x",
        token=tokens["viewer"],
        org="acme",
        headers={"X-Forwarded-For": "10.9.9.9", "Forwarded": "for=10.9.9.9"},
    )
    seen = bare.upstream.last
    assert [v for k, v in seen.headers if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]
    assert seen.header("Forwarded") is None


async def test_underscore_header_names_are_refused(bare: BareGateway) -> None:
    """`X_Gateway_Roles` and any other name with `_` is a 400 on proxied routes and never forwarded."""
    tokens = bare.tokens
    for name in ("X_Gateway_Roles", "x_gateway_user", "X-Custom_Thing"):
        status, _, body = await bare.call(
            "GET", "/api/x", token=tokens["viewer"], org="acme", headers={name: "superadmin"}
        )
        assert status == 400, name
        assert "'_'" in json.loads(body)["detail"]
    assert bare.upstream.seen == []


async def test_underscore_headers_when_allowed_still_never_spoof_identity(upstream: Upstream, tmp_path: Path) -> None:
    """With allow_underscore_headers, other `_` headers pass, but `x_gateway_*` spellings are still stripped."""
    async with bare_serving(upstream, tmp_path, allow_underscore_headers=True, audit_log="off") as gateway:
        tokens = gateway.tokens
        status, _, _ = await gateway.call(
            "GET",
            "/api/x",
            token=tokens["viewer"],
            org="acme",
            headers={"X_Gateway_Roles": "superadmin", "X_Trace": "1"},
        )
        assert status == 200
        names = upstream.last.names()
        assert "x_trace" in names
        assert "x_gateway_roles" not in names
        assert upstream.last.header("X-Gateway-Roles") == "viewer"


async def test_rewrite_and_method_override_headers_are_stripped(bare: BareGateway) -> None:
    """Headers that make some upstreams act on another path or method never reach the upstream."""
    tokens = bare.tokens
    rewrites = {
        "X-Original-URL": "/api/admin",
        "X-Rewrite-URL": "/api/admin",
        "X-Forwarded-Uri": "/api/admin",
        "X-Forwarded-Prefix": "/admin",
        "X-HTTP-Method-Override": "DELETE",
        "X-Method-Override": "DELETE",
        "X-HTTP-Method": "DELETE",
        "X-Real-IP": "10.0.0.1",
    }
    status, _, _ = await bare.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=rewrites)
    assert status == 200
    assert not {name.lower() for name in rewrites} & bare.upstream.last.names()


async def test_request_ids_are_accepted_or_created_and_passed_everywhere(bare: BareGateway) -> None:
    """A well-formed X-Request-Id is kept, a bad one replaced; upstream, response and audit line carry it."""
    tokens = bare.tokens
    status, headers, _ = await bare.call(
        "GET", "/api/x", token=tokens["viewer"], org="acme", headers={"X-Request-Id": "req-123.abc_DEF"}
    )
    assert status == 200
    assert headers["X-Request-Id"] == "req-123.abc_DEF"
    assert bare.upstream.last.header("X-Request-Id") == "req-123.abc_DEF"
    assert len([k for k, _ in bare.upstream.last.headers if k.lower() == "x-request-id"]) == 1

    _, headers, _ = await bare.call(
        "GET",
        "/api/x",
        token=tokens["viewer"],
        org="acme",
        headers={"X-Request-Id": "evil value\twith spaces" + "x" * 200},
    )
    created = headers["X-Request-Id"]
    assert len(created) == 32
    assert bare.upstream.last.header("X-Request-Id") == created

    status, headers, _ = await bare.call("DELETE", "/api/x", token=tokens["viewer"], org="acme")
    assert status == 403
    denied_id = headers["X-Request-Id"]
    events = bare.audit_events()
    assert [e["request_id"] for e in events[-3:]] == ["req-123.abc_DEF", created, denied_id]


async def test_trusted_proxy_chain_reaches_audit_and_upstream(upstream: Upstream, tmp_path: Path) -> None:
    """Behind a configured proxy, the audit line and the upstream see the real client and scheme."""
    async with bare_serving(upstream, tmp_path, trusted_proxies=["127.0.0.1"]) as gateway:
        tokens = gateway.tokens
        forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
        status, _, _ = await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=forwarded)
        assert status == 200
        assert gateway.audit_events()[-1]["client_ip"] == "203.0.113.9"
        assert upstream.last.header("X-Forwarded-For") == "6.6.6.6, 203.0.113.9, 127.0.0.1"
        assert upstream.last.header("X-Forwarded-Proto") == "https"


async def test_oversized_headers_are_431(bare: BareGateway) -> None:
    """Request headers totalling more than max_header_bytes are refused before authentication."""
    tokens = bare.tokens
    headers = {f"X-Pad-{i}": "p" * 1000 for i in range(40)}
    status, _, body = await bare.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=headers)
    assert status == 431
    assert json.loads(body)["type"] == "urn:gateway:problem:headers-too-large"
    assert bare.upstream.seen == []
