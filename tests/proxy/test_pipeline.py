"""The whole request path through real HTTP: match, authenticate, resolve org, enforce, forward, audit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.asgi import create_gateway
from tests.conftest import (
    ROOT,
    Gateway,
    Upstream,
    closed_port,
    gateway_settings,
    load_system_policy,
    serving,
    start_gateway,
)
from tests.waiting import eventually

PROBLEM = "application/problem+json"


async def _acme(gateway: Gateway) -> dict[str, str]:
    """Users of each system role in acme, plus an outsider and a superadmin; returns email -> token."""
    await gateway.org("acme")
    await gateway.org("globex")
    for role in ("owner", "admin", "member", "viewer"):
        await gateway.user(f"{role}@acme.test", org="acme", role=role)
    await gateway.user("carol@globex.test", org="globex", role="owner")
    await gateway.user("root@platform.test", superadmin=True)
    emails = [f"{r}@acme.test" for r in ("owner", "admin", "member", "viewer")]
    emails += ["carol@globex.test", "root@platform.test"]
    return {email.split("@")[0]: await gateway.login(email) for email in emails}


ROLE_MATRIX = [
    # role, method, expected status
    ("viewer", "GET", 200),
    ("viewer", "HEAD", 200),
    ("viewer", "POST", 403),
    ("viewer", "DELETE", 403),
    ("member", "GET", 200),
    ("member", "POST", 200),
    ("member", "PUT", 200),
    ("member", "PATCH", 200),
    ("member", "DELETE", 403),
    ("admin", "DELETE", 200),
    ("admin", "POST", 200),
    ("owner", "DELETE", 200),
    ("owner", "GET", 200),
]


@pytest.mark.parametrize(("role", "method", "expected"), ROLE_MATRIX, ids=[f"{r}-{m}-{e}" for r, m, e in ROLE_MATRIX])
async def test_system_roles_allow_and_deny(gateway: Gateway, role: str, method: str, expected: int) -> None:
    """Each system role gets exactly the methods policies/system.csv grants it, in its own org."""
    tokens = await _acme(gateway)
    before = len(gateway.upstream.seen)
    status, headers, _ = await gateway.call(method, "/api/orders/7", token=tokens[role], org="acme")
    assert status == expected
    forwarded = len(gateway.upstream.seen) - before
    assert forwarded == (1 if expected == 200 else 0), "a denied request must never reach the upstream"
    if expected == 403:
        assert headers["Content-Type"].startswith(PROBLEM)


async def test_cross_org_is_denied(gateway: Gateway) -> None:
    """A member of acme has no rights in globex, and vice versa."""
    tokens = await _acme(gateway)
    status, _, body = await gateway.call("GET", "/api/x", token=tokens["owner"], org="globex")
    assert status == 403
    assert json.loads(body)["type"] == "urn:gateway:problem:forbidden"
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["carol"], org="acme")
    assert status == 403
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["carol"], org="globex")
    assert status == 200


async def test_superadmin_is_allowed_in_every_org(gateway: Gateway) -> None:
    """A `g, user, superadmin, *` line applies in every organization, for every method."""
    tokens = await _acme(gateway)
    for org in ("acme", "globex"):
        for method in ("GET", "DELETE", "POST"):
            status, _, _ = await gateway.call(method, "/api/anything/deep", token=tokens["root"], org=org)
            assert status == 200
    assert gateway.upstream.last.header("X-Gateway-Roles") == "superadmin"


async def test_unknown_org_looks_exactly_like_a_denial(gateway: Gateway) -> None:
    """An org that does not exist gets the same status and body shape as one the caller may not use."""
    tokens = await _acme(gateway)
    unknown = await gateway.call("GET", "/api/x", token=tokens["owner"], org="no-such-org")
    foreign = await gateway.call("GET", "/api/x", token=tokens["owner"], org="globex")
    assert unknown[0] == foreign[0] == 403
    strip = lambda body: {k: v for k, v in json.loads(body).items() if k != "decision_id"}  # noqa: E731
    assert strip(unknown[2]) == strip(foreign[2])
    bogus = await gateway.call("GET", "/api/x", token=tokens["owner"], org="*")
    assert bogus[0] == 403


async def test_missing_org_header_is_a_clear_400(gateway: Gateway) -> None:
    """A header-org route without X-Org says what is missing."""
    tokens = await _acme(gateway)
    status, _, body = await gateway.call("GET", "/api/x", token=tokens["owner"])
    assert status == 400
    assert "X-Org" in json.loads(body)["detail"]


async def test_org_from_path_segment(gateway: Gateway) -> None:
    """A route with org_from=path takes the org from the first segment after its prefix."""
    tokens = await _acme(gateway)
    status, _, _ = await gateway.call("GET", "/orgs/acme/projects", token=tokens["viewer"])
    assert status == 200
    assert gateway.upstream.last.header("X-Gateway-Org") == "acme"
    status, _, _ = await gateway.call("GET", "/orgs/globex/projects", token=tokens["viewer"])
    assert status == 403


async def test_upstream_receives_verified_identity(gateway: Gateway) -> None:
    """The upstream gets X-Gateway-User/Org/Roles and the path, query and body exactly as authorized."""
    tokens = await _acme(gateway)
    user_id = gateway.runtime.services.tokens.verify(tokens["member"]).user_id
    status, _, _ = await gateway.call(
        "POST",
        "/api/orders?limit=5&b=%20x",
        token=tokens["member"],
        org="acme",
        data=b'{"n": 1}',
        headers={"content-type": "application/json"},
    )
    assert status == 200
    seen = gateway.upstream.last
    assert seen.method == "POST"
    assert seen.raw_path == "/api/orders?limit=5&b=%20x"
    assert seen.body == b'{"n": 1}'
    assert seen.header("X-Gateway-User") == user_id
    assert seen.header("X-Gateway-Org") == "acme"
    assert seen.header("X-Gateway-Roles") == "member"
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Authorization") is None, "the gateway's credential is not passed on"


async def _raw(gateway: Gateway, request: bytes) -> bytes:
    """Send `request` byte for byte and read the whole answer (the connection is closed by the request)."""
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_the_upstream_gets_only_the_clients_headers_and_the_gateways(gateway: Gateway) -> None:
    """Nothing is added on the client's behalf: no Accept, Accept-Encoding or User-Agent it did not send (an
    Accept-Encoding would bring back a compressed body), and a body without a Content-Type gets none."""
    tokens = await _acme(gateway)
    for request in (
        f"GET /api/bare HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
        "Connection: close\r\n\r\n",
        f"POST /api/bare HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
        "Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    ):
        assert (await _raw(gateway, request.encode())).startswith(b"HTTP/1.1 200")
        seen = gateway.upstream.last
        added = seen.names() - {"host", "x-org", "x-gateway-user", "x-gateway-org", "x-gateway-roles", "x-request-id"}
        added -= {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
        expected = {"content-length"} if seen.method == "POST" else set()
        assert added == expected, seen.headers
    assert gateway.upstream.last.body == b"hello"


async def test_client_sent_identity_headers_never_reach_upstream(gateway: Gateway) -> None:
    """Spoofed X-Gateway-* headers, in any case or with underscores, are dropped before forwarding."""
    tokens = await _acme(gateway)
    spoof = {
        "X-Gateway-User": "attacker",
        "x-gateway-org": "globex",
        "X-GATEWAY-ROLES": "superadmin",
        "X-Gateway-Extra": "1",
    }
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=spoof)
    assert status == 200
    seen = gateway.upstream.last
    values = [v for k, v in seen.headers if k.lower().replace("_", "-").startswith("x-gateway-")]
    assert sorted(values) == sorted([seen.header("X-Gateway-User"), "acme", "viewer"])
    assert "attacker" not in values
    assert "superadmin" not in values
    # public routes never carry identity either
    status, _, _ = await gateway.call("GET", "/public/x", headers=spoof)
    assert status == 200
    assert not [k for k, _ in gateway.upstream.last.headers if k.lower().replace("_", "-").startswith("x-gateway")]


async def test_hop_by_hop_headers_are_removed_both_ways(gateway: Gateway) -> None:
    """Connection, Keep-Alive, TE, Upgrade and headers named in Connection are not forwarded or returned."""
    tokens = await _acme(gateway)
    status, headers, _ = await gateway.call(
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
    names = gateway.upstream.last.names()
    assert {"x-drop-me", "te", "proxy-authorization"}.isdisjoint(names)
    assert "x-keep" in names
    assert gateway.upstream.last.header("X-Forwarded-For") == "127.0.0.1"
    # the upstream answered with Connection: x-secret-hop and Keep-Alive; neither comes back
    assert "X-Secret-Hop" not in headers
    assert "Keep-Alive" not in headers
    assert headers["X-Upstream"] == "yes"


async def test_spoofed_forwarded_headers_are_replaced(gateway: Gateway) -> None:
    """X-Forwarded-For from the client is not trusted: the gateway writes the address it saw."""
    tokens = await _acme(gateway)
    await gateway.call(
        "GET",
        "/api/x",
        token=tokens["viewer"],
        org="acme",
        headers={"X-Forwarded-For": "10.9.9.9", "Forwarded": "for=10.9.9.9"},
    )
    seen = gateway.upstream.last
    assert [v for k, v in seen.headers if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]
    assert seen.header("Forwarded") is None


def _forge(
    claims: dict[str, object], *, key: Ed25519PrivateKey | None = None, kid: str = "x", typ: str = "at+jwt"
) -> str:
    return jwt.encode(claims, key or Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid, "typ": typ})


async def test_bad_credentials_are_401_with_bearer_challenge(gateway: Gateway) -> None:
    """No token, garbage, bad signature, expired, wrong audience/issuer, wrong typ, alg none -> 401."""
    tokens = await _acme(gateway)
    ring = gateway.runtime.services.tokens.ring
    kid = ring.active_kid
    key = ring.private_keys[kid]
    settings = gateway.runtime.settings.tokens
    now = int(time.time())
    good = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": "u",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }

    status, headers, body = await gateway.call("GET", "/api/x", org="acme")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert headers["Content-Type"].startswith(PROBLEM)

    bad_tokens = {
        "garbage": "not.a.jwt",
        "bad-signature": _forge(good, kid=kid),
        "unknown-kid": _forge(good, key=key, kid="nope"),
        "expired": _forge({**good, "iat": now - 120, "exp": now - 60}, key=key, kid=kid),
        "wrong-audience": _forge({**good, "aud": "someone-else"}, key=key, kid=kid),
        "wrong-issuer": _forge({**good, "iss": "evil"}, key=key, kid=kid),
        "wrong-typ": _forge(good, key=key, kid=kid, typ="JWT"),
        "no-exp": _forge({k: v for k, v in good.items() if k != "exp"}, key=key, kid=kid),
        "alg-none": jwt.encode(good, None, algorithm="none", headers={"kid": kid, "typ": "at+jwt"}),
        "tampered": tokens["viewer"][:-4] + ("AAAA" if not tokens["viewer"].endswith("AAAA") else "BBBB"),
    }
    for name, token in bad_tokens.items():
        status, headers, body = await gateway.call("GET", "/api/x", token=token, org="acme")
        assert status == 401, name
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', name
        assert json.loads(body)["type"] == "urn:gateway:problem:invalid-token", name
    status, headers, _ = await gateway.call(
        "GET", "/api/x", org="acme", headers={"Authorization": f"Basic {tokens['viewer']}"}
    )
    assert status == 401
    assert gateway.upstream.seen == [], "no rejected request may reach the upstream"


async def test_unknown_route_is_404_and_never_forwarded(gateway: Gateway) -> None:
    """Paths outside every configured prefix (including look-alike prefixes) are 404."""
    tokens = await _acme(gateway)
    for path in ("/nothing", "/apix", "/ap", "/auth/nope", "/admin/x"):
        status, headers, _body = await gateway.call("GET", path, token=tokens["root"], org="acme")
        assert status == 404, path
        assert headers["Content-Type"].startswith(PROBLEM), path
    assert gateway.upstream.seen == []


async def test_upstream_down_is_502(gateway: Gateway) -> None:
    """A refused upstream connection is 502 problem+json."""
    tokens = await _acme(gateway)
    status, _headers, body = await gateway.call("GET", "/down/x", token=tokens["root"], org="acme")
    assert status == 502
    assert json.loads(body)["type"] == "urn:gateway:problem:bad-gateway"


async def test_slow_upstream_is_504(gateway: Gateway) -> None:
    """An upstream slower than the route's read timeout is 504 problem+json."""
    tokens = await _acme(gateway)
    started = time.perf_counter()
    status, _, body = await gateway.call("GET", "/api/slowish/slow", token=tokens["root"], org="acme")
    assert status == 504
    assert json.loads(body)["type"] == "urn:gateway:problem:gateway-timeout"
    assert time.perf_counter() - started < 3


async def test_longest_prefix_wins_and_strip_prefix(gateway: Gateway) -> None:
    """`/api/slowish` beats `/api`; a stripping route forwards the rest under the upstream's base path."""
    tokens = await _acme(gateway)
    status, _, _ = await gateway.call("GET", "/stripped/a/b?q=1", token=tokens["viewer"], org="acme")
    assert status == 200
    assert gateway.upstream.last.raw_path == "/base/a/b?q=1"
    status, _, _ = await gateway.call("GET", "/stripped", token=tokens["viewer"], org="acme")
    assert gateway.upstream.last.raw_path == "/base/"


async def test_public_route_needs_no_token(gateway: Gateway) -> None:
    """`public = true` routes skip authentication and authorization and keep the client's Authorization."""
    status, _, _ = await gateway.call("GET", "/public/docs", headers={"Authorization": "Bearer opaque"})
    assert status == 200
    assert gateway.upstream.last.header("Authorization") == "Bearer opaque"


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
        "/auth/%252e%252e/admin",  # the control plane's paths too
    ],
)
async def test_ambiguous_paths_are_400(gateway: Gateway, raw_path: str) -> None:
    """Paths with no single canonical meaning, or that a second decoding or Unicode normalisation upstream
    would read with another dot segment or separator, are refused before any other stage."""
    tokens = await _acme(gateway)
    status, _, body = await gateway.call("GET", raw_path, token=tokens["root"], org="acme")
    assert status == 400
    assert json.loads(body)["type"] == "urn:gateway:problem:invalid-path"
    assert gateway.upstream.seen == []


async def test_a_route_may_accept_paths_a_second_reading_would_change(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """With strict_paths = false, a route forwards double-encoded and NFKC-ambiguous paths as they are; other
    routes keep refusing them."""
    await load_system_policy(db_url)
    routes = [
        {"prefix": "/lenient", "upstream": upstream.url, "public": True, "strict_paths": False},
        {"prefix": "/public", "upstream": upstream.url, "public": True},
    ]
    settings = gateway_settings(db_url, upstream.url, routes=routes, audit_log="off")
    async with serving(settings, upstream) as lenient:
        assert (await lenient.call("GET", "/lenient/a%252fb/%EF%BC%8E"))[0] == 200
        assert upstream.last.raw_path == "/lenient/a%252fb/%EF%BC%8E"
        assert (await lenient.call("GET", "/public/a%252fb"))[0] == 400


async def test_authorized_path_is_the_forwarded_path(gateway: Gateway) -> None:
    """Dot segments and double slashes are resolved once; Casbin and the upstream see the same bytes."""
    tokens = await _acme(gateway)
    status, _, _ = await gateway.call("GET", "/api//orders/./7/../8", token=tokens["viewer"], org="acme")
    assert status == 200
    assert gateway.upstream.last.raw_path == "/api/orders/8"
    status, _, _ = await gateway.call("GET", "/api/caf%c3%a9/%41", token=tokens["viewer"], org="acme")
    assert status == 200
    assert gateway.upstream.last.raw_path == "/api/caf%C3%A9/A"


async def test_response_streams_back(gateway: Gateway) -> None:
    """A multi-megabyte upstream response arrives whole."""
    tokens = await _acme(gateway)
    size = 5 * 1024 * 1024 + 17
    status, _, body = await gateway.call("GET", f"/api/download/{size}", token=tokens["viewer"], org="acme")
    assert status == 200
    assert len(body) == size


async def test_request_body_streams_upstream(gateway: Gateway) -> None:
    """A chunked multi-megabyte upload reaches the upstream byte for byte."""
    tokens = await _acme(gateway)
    payload = bytes(range(256)) * 20000

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    status, _, _ = await gateway.call("PUT", "/api/blob", token=tokens["member"], org="acme", data=chunks())
    assert status == 200
    assert gateway.upstream.last.body == payload


async def test_membership_change_takes_effect_without_restart(gateway: Gateway) -> None:
    """Promoting a viewer to admin changes the next decision; the token stays the same."""
    tokens = await _acme(gateway)
    assert (await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme"))[0] == 403
    await gateway.member("acme", "viewer@acme.test", "admin")
    assert (await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme"))[0] == 200
    assert gateway.upstream.last.header("X-Gateway-Roles") == "admin"


async def test_every_request_is_audited_without_secrets(gateway: Gateway) -> None:
    """One audit line per proxied request with the decision; the token never appears in it."""
    tokens = await _acme(gateway)
    await gateway.call("GET", "/api/ok", token=tokens["viewer"], org="acme")
    _, _, body = await gateway.call("DELETE", "/api/no", token=tokens["viewer"], org="acme")
    await gateway.call("GET", "/api/x", token="garbage", org="acme")
    events = gateway.audit_events()
    assert [(e["method"], e["granted"], e["status"]) for e in events] == [
        ("GET", True, 200),
        ("DELETE", False, 403),
        ("GET", False, 401),
    ]
    assert events[1]["decision_id"] == json.loads(body)["decision_id"]
    assert events[0]["reason"].startswith("matched p, viewer")
    assert events[0]["org"] == "acme"
    assert events[0]["route"] == "/api"
    assert events[2]["reason"] == "invalid-token"
    raw = Path(gateway.runtime.settings.audit_log).read_text()
    assert tokens["viewer"] not in raw
    assert "garbage" not in raw


async def test_steady_state_makes_no_database_query(gateway: Gateway) -> None:
    """Proxied requests are served from memory: the only statements are the background version poll."""
    from sqlalchemy import event

    tokens = await _acme(gateway)
    await gateway.call("GET", "/api/warm", token=tokens["viewer"], org="acme")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    engine = gateway.runtime.services.db.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for index in range(30):
            status, _, _ = await gateway.call("GET", f"/api/items/{index}", token=tokens["viewer"], org="acme")
            assert status == 200
            status, _, _ = await gateway.call("DELETE", f"/api/items/{index}", token=tokens["viewer"], org="acme")
            assert status == 403
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert all("state_version" in statement for statement in statements), statements


async def test_disabled_user_loses_every_grant(gateway: Gateway) -> None:
    """Disabling a user drops their memberships and global roles from the policy on the next reload."""
    from sqlalchemy import update

    from gateway.db.engine import bump_version
    from gateway.db.models import User

    tokens = await _acme(gateway)
    assert (await gateway.call("GET", "/api/x", token=tokens["root"], org="acme"))[0] == 200
    async with gateway.runtime.services.sessions() as session:
        await session.execute(
            update(User).where(User.email.in_(["root@platform.test", "viewer@acme.test"])).values(disabled=True)
        )
        await bump_version(session)
        await session.commit()
    await gateway.runtime.refresh()
    assert (await gateway.call("GET", "/api/x", token=tokens["root"], org="acme"))[0] == 403
    assert (await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme"))[0] == 403
    assert (await gateway.call("GET", "/api/x", token=tokens["member"], org="acme"))[0] == 200


async def test_changes_made_elsewhere_arrive_by_polling(gateway: Gateway) -> None:
    """A membership written by another process (no explicit refresh here) is enforced within a poll or two."""
    tokens = await _acme(gateway)
    assert (await gateway.call("DELETE", "/api/x", token=tokens["member"], org="acme"))[0] == 403
    from gateway.manage import members
    from gateway.manage.common import find_org
    from tests.conftest import CLI

    async with gateway.runtime.services.sessions() as session:  # as the CLI would: write, bump, commit; no refresh
        user = await members.find_user(session, email="member@acme.test")
        await members.change_role(session, CLI, await find_org(session, "acme"), user.id, "admin")
        await session.commit()

    async def allowed() -> bool:
        return (await gateway.call("DELETE", "/api/x", token=tokens["member"], org="acme"))[0] == 200

    await eventually(allowed, within=2.5, every=0.05, what="the change never reached the running gateway")


async def test_watched_files_reload_and_bad_edits_are_refused(
    db_url: str, upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With watch_files, edits to policies/ and model.conf apply without a restart; an edit with an error is
    refused and logged while traffic keeps flowing on the previous policy."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    policy_file = policy_dir / "system.csv"
    policy_file.write_text((ROOT / "policies" / "system.csv").read_text())
    model = tmp_path / "model.conf"
    model.write_text((ROOT / "model.conf").read_text())
    settings = gateway_settings(
        db_url,
        upstream.url,
        watch_files=True,
        policy_dir=str(policy_dir),
        model_path=str(model),
        audit_log="off",
        policy_poll_seconds=0.05,
    )
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("v@acme.test", org="acme", role="viewer")
        token = await gateway.login("v@acme.test")

        async def status(method: str) -> int:
            return (await gateway.call(method, "/api/x", token=token, org="acme"))[0]

        async def becomes(method: str, expected: int) -> None:
            async def answered() -> bool:
                return await status(method) == expected

            await eventually(answered, every=0.05, what=f"{method} never became {expected}")

        assert (await status("GET"), await status("DELETE")) == (200, 403)
        with policy_file.open("a") as handle:
            handle.write("p, viewer, acme, /api/x, DELETE\n")
        await becomes("DELETE", 200)
        loaded_at = gateway.runtime.state.loaded_at

        caplog.set_level(logging.ERROR, logger="gateway")
        with policy_file.open("a") as handle:  # a poisoned line: the whole edit is refused
            handle.write("p, viewer, acme, /a,b, GET\np, viewer, acme, /api/y, POST\n")
        await eventually(lambda: "policy files refused" in caplog.text, what="the poisoned edit was not refused")
        assert "system.csv:" in caplog.text
        # Traffic keeps flowing on the old policy meanwhile, through several more polls of the watcher.
        syncs = {gateway.runtime.last_sync}

        async def flowing_through_polls() -> bool:
            assert (await status("GET"), await status("DELETE")) == (200, 200)
            syncs.add(gateway.runtime.last_sync)
            return len(syncs) > 3

        await eventually(flowing_through_polls, what="the watcher stopped polling after the refused edit")
        assert gateway.runtime.state.loaded_at == loaded_at
        assert (await gateway.call("POST", "/api/y", token=token, org="acme"))[0] == 403

        caplog.clear()
        model.write_text("[request_definition]\nr = sub\n")  # a broken model is refused the same way
        await eventually(lambda: "casbin cannot load the model" in caplog.text, what="the broken model was not refused")
        assert await status("DELETE") == 200

        model.write_text((ROOT / "model.conf").read_text())
        policy_file.write_text((ROOT / "policies" / "system.csv").read_text())
        await becomes("DELETE", 403)  # the fixed files apply again


async def test_underscore_header_names_are_refused(gateway: Gateway) -> None:
    """`X_Gateway_Roles` and any other name with `_` is a 400 on proxied routes and never forwarded."""
    tokens = await _acme(gateway)
    for name in ("X_Gateway_Roles", "x_gateway_user", "X-Custom_Thing"):
        status, _, body = await gateway.call(
            "GET", "/api/x", token=tokens["viewer"], org="acme", headers={name: "superadmin"}
        )
        assert status == 400, name
        assert "'_'" in json.loads(body)["detail"]
    assert gateway.upstream.seen == []


async def test_underscore_headers_when_allowed_still_never_spoof_identity(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """With allow_underscore_headers, other `_` headers pass, but `x_gateway_*` spellings are still stripped."""
    await load_system_policy(db_url)
    settings = gateway_settings(db_url, upstream.url, allow_underscore_headers=True, audit_log="off")
    async with serving(settings, upstream) as gateway:
        tokens = await _acme(gateway)
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


async def test_rewrite_and_method_override_headers_are_stripped(gateway: Gateway) -> None:
    """Headers that make some upstreams act on another path or method never reach the upstream."""
    tokens = await _acme(gateway)
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
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=rewrites)
    assert status == 200
    assert not {name.lower() for name in rewrites} & gateway.upstream.last.names()


async def test_request_ids_are_accepted_or_created_and_passed_everywhere(gateway: Gateway) -> None:
    """A well-formed X-Request-Id is kept, a bad one replaced; upstream, response and audit line carry it."""
    tokens = await _acme(gateway)
    status, headers, _ = await gateway.call(
        "GET", "/api/x", token=tokens["viewer"], org="acme", headers={"X-Request-Id": "req-123.abc_DEF"}
    )
    assert status == 200
    assert headers["X-Request-Id"] == "req-123.abc_DEF"
    assert gateway.upstream.last.header("X-Request-Id") == "req-123.abc_DEF"
    assert len([k for k, _ in gateway.upstream.last.headers if k.lower() == "x-request-id"]) == 1

    _, headers, _ = await gateway.call(
        "GET",
        "/api/x",
        token=tokens["viewer"],
        org="acme",
        headers={"X-Request-Id": "evil value\twith spaces" + "x" * 200},
    )
    created = headers["X-Request-Id"]
    assert len(created) == 32
    assert gateway.upstream.last.header("X-Request-Id") == created

    status, headers, _ = await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme")
    assert status == 403
    denied_id = headers["X-Request-Id"]
    events = gateway.audit_events()
    assert [e["request_id"] for e in events[-3:]] == ["req-123.abc_DEF", created, denied_id]


async def test_trusted_proxy_chain_reaches_audit_and_upstream(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """Behind a configured proxy, the audit line and the upstream see the real client and scheme."""
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url, upstream.url, trusted_proxies=["127.0.0.1"], audit_log=str(tmp_path / "audit.jsonl")
    )
    async with serving(settings, upstream) as gateway:
        tokens = await _acme(gateway)
        forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
        status, _, _ = await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=forwarded)
        assert status == 200
        assert gateway.audit_events()[-1]["client_ip"] == "203.0.113.9"
        assert upstream.last.header("X-Forwarded-For") == "6.6.6.6, 203.0.113.9, 127.0.0.1"
        assert upstream.last.header("X-Forwarded-Proto") == "https"


async def test_body_over_the_route_limit_is_413(gateway: Gateway) -> None:
    """A declared or streamed body over max_body_bytes is 413 and never delivered whole upstream."""
    tokens = await _acme(gateway)
    ok = await gateway.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=b"x" * 1000)
    assert ok[0] == 200
    declared = await gateway.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=b"x" * 1001)
    assert declared[0] == 413
    assert json.loads(declared[2])["type"] == "urn:gateway:problem:payload-too-large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"y" * 400

    before = len(gateway.upstream.seen)
    streamed = await gateway.call("POST", "/api/small/x", token=tokens["member"], org="acme", data=chunks())
    assert streamed[0] == 413
    assert len(gateway.upstream.seen) == before, "the upstream must not receive a truncated body as complete"
    big = await gateway.call("POST", "/api/x", token=tokens["member"], org="acme", data=b"z" * 50_000)
    assert big[0] == 200, "other routes keep the default limit"


async def test_oversized_headers_are_431(gateway: Gateway) -> None:
    """Request headers totalling more than max_header_bytes are refused before authentication."""
    tokens = await _acme(gateway)
    headers = {f"X-Pad-{i}": "p" * 1000 for i in range(40)}
    status, _, body = await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme", headers=headers)
    assert status == 431
    assert json.loads(body)["type"] == "urn:gateway:problem:headers-too-large"
    assert gateway.upstream.seen == []


async def test_identity_token_verifies_with_the_jwks(gateway: Gateway) -> None:
    """A route with identity_token sends a short-lived JWT the upstream verifies with the public JWKS alone."""
    tokens = await _acme(gateway)
    status, _, _ = await gateway.call("GET", "/signed/x", token=tokens["member"], org="acme")
    assert status == 200
    identity = gateway.upstream.last.header("X-Gateway-Identity")
    assert identity is not None
    async with gateway.http.get(gateway.url + "/.well-known/jwks.json") as response:
        assert response.status == 200
        jwks = await response.json()
    assert all(set(key) == {"kty", "crv", "x", "kid", "alg", "use"} for key in jwks["keys"]), "no private part"
    header = jwt.get_unverified_header(identity)
    assert header["typ"] == "gw-identity+jwt"
    public = jwt.PyJWK({k: v for k, v in next(k for k in jwks["keys"] if k["kid"] == header["kid"]).items()})
    claims = jwt.decode(identity, public.key, algorithms=["EdDSA"], audience=gateway.upstream.url)
    assert claims["sub"] == gateway.upstream.last.header("X-Gateway-User")
    assert claims["org"] == "acme"
    assert claims["roles"] == ["member"]
    assert claims["exp"] - claims["iat"] == 60
    # the identity token is not an access token: the gateway refuses it as a bearer
    assert (await gateway.call("GET", "/api/x", token=identity, org="acme"))[0] == 401
    # routes without the option send none
    await gateway.call("GET", "/api/x", token=tokens["member"], org="acme")
    assert gateway.upstream.last.header("X-Gateway-Identity") is None


PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "DELETE",
    "Access-Control-Request-Headers": "Authorization, X-Org",
}


async def test_cors_preflight_is_answered_by_the_gateway(gateway: Gateway) -> None:
    """On a route with cors, an allowed preflight gets 204 without credentials and never reaches upstream."""
    status, headers, _ = await gateway.call("OPTIONS", "/cors/items/1", headers=PREFLIGHT)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "authorization, x-org"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert gateway.upstream.seen == []
    for refused in (
        {**PREFLIGHT, "Origin": "https://evil.example"},
        {**PREFLIGHT, "Access-Control-Request-Headers": "X-Secret"},
        {**PREFLIGHT, "Access-Control-Request-Method": "TRACE"},
    ):
        status, headers, _ = await gateway.call("OPTIONS", "/cors/items/1", headers=refused)
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers


async def test_cors_headers_on_actual_responses_and_errors(gateway: Gateway) -> None:
    """Allowed origins get Access-Control-* on proxied answers and on errors; others get none."""
    tokens = await _acme(gateway)
    origin = {"Origin": "https://app.example"}
    status, headers, _ = await gateway.call("GET", "/cors/x", token=tokens["viewer"], org="acme", headers=origin)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Expose-Headers"] == "x-request-id"
    status, headers, _ = await gateway.call("GET", "/cors/x", headers=origin)
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = await gateway.call(
        "GET", "/cors/x", token=tokens["viewer"], org="acme", headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_without_cors_an_options_request_is_authorized_like_any_other(gateway: Gateway) -> None:
    """A route without cors does not answer preflights: no token is 401, and viewers may not OPTIONS."""
    tokens = await _acme(gateway)
    assert (await gateway.call("OPTIONS", "/api/x", headers=PREFLIGHT))[0] == 401
    assert (await gateway.call("OPTIONS", "/api/x", token=tokens["viewer"], org="acme", headers=PREFLIGHT))[0] == 403


async def test_metrics_count_decisions_and_split_latency(gateway: Gateway) -> None:
    """/metrics counts proxied requests by route, status and decision and times gateway vs upstream."""
    tokens = await _acme(gateway)
    await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme")
    await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme")
    await gateway.call("GET", "/api/x", org="acme")
    await gateway.call("GET", "/public/x")
    async with gateway.http.get(gateway.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    for line in (
        'gateway_requests_total{decision="allowed",route="/api",status="200"} 1.0',
        'gateway_requests_total{decision="denied",route="/api",status="403"} 1.0',
        'gateway_requests_total{decision="refused",route="/api",status="401"} 1.0',
        'gateway_requests_total{decision="public",route="/public",status="200"} 1.0',
        'gateway_upstream_seconds_count{route="/api"} 1.0',
        'gateway_overhead_seconds_count{route="/api"} 3.0',
        'gateway_upstream_in_flight{route="/api"} 0.0',
        f"gateway_policy_version {float(gateway.runtime.state.version)}",
    ):
        assert line in text, line
    assert tokens["viewer"] not in text


async def test_idempotent_requests_retry_a_refused_connection(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """A GET whose upstream comes up during the retry back-off succeeds; a POST is never retried."""
    await load_system_policy(db_url)
    port = closed_port()
    routes = [{"prefix": "/late", "upstream": f"http://127.0.0.1:{port}", "retries": 2}]
    app = create_gateway(gateway_settings(db_url, upstream.url, routes=routes, audit_log="off"))
    url, server, task = await start_gateway(app)
    late = web.AppRunner(web.Application())
    try:
        async with aiohttp.ClientSession() as http:
            gateway = Gateway(url=url, http=http, runtime=app.runtime, upstream=upstream)
            tokens = await _acme(gateway)
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
        server.should_exit = True
        await task


async def test_client_disconnect_cancels_the_upstream_request(gateway: Gateway) -> None:
    """When the client goes away while the upstream works, the gateway stops waiting at once."""
    tokens = await _acme(gateway)
    with pytest.raises(TimeoutError):
        async with gateway.http.get(
            gateway.url + "/api/x/slow",
            timeout=aiohttp.ClientTimeout(total=0.3),
            headers={"Authorization": f"Bearer {tokens['viewer']}", "X-Org": "acme"},
        ):
            pass
    events = await eventually(
        lambda: [e for e in gateway.audit_events() if e["path"] == "/api/x/slow"],
        within=2,
        every=0.05,
        what="no audit line for the abandoned request",
    )
    assert events[0]["status"] == 499
    assert events[0]["reason"] == "client disconnected"
    assert events[0]["duration_ms"] < 1500, "the gateway kept waiting for the upstream"


async def test_route_with_its_own_pool(gateway: Gateway) -> None:
    """pool_size on a route gives it a separate connection pool of that size."""
    tokens = await _acme(gateway)
    assert (await gateway.call("GET", "/pooled/x", token=tokens["viewer"], org="acme"))[0] == 200
    assert gateway.runtime.services.pools["/pooled"].connector is not None
    assert gateway.runtime.services.pools["/pooled"].connector.limit == 1
    assert gateway.runtime.services.http.connector is not None
    assert gateway.runtime.services.http.connector.limit == 256


async def test_a_response_leaves_in_one_write_and_100_continue_is_not_held(gateway: Gateway) -> None:
    """The head and a small body arrive together; a HEAD answer and an upload behind `Expect: 100-continue`
    (the interim answer is sent at once, before the body) still work."""
    tokens = await _acme(gateway)
    auth = f"Authorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /api/one HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
    first = await asyncio.wait_for(reader.read(65536), 5)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'"bytes": 0}'), first
    writer.write(f"HEAD /api/one HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(
        f"POST /api/up HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer.startswith(b"HTTP/1.1 200") and b'"bytes": 5' in answer
    writer.close()
