"""Access tokens of a trusted outside issuer through the real proxy: the `ext:` subject and policy, every refusal
RFC 8725 asks for, key rotation at the issuer, the refetch throttle, outages, linked users and the control plane
(REQ-B20, REQ-B21, REQ-B22, REQ-B23)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.db.engine import bump_version
from gateway.db.models import ExternalIdentity, User
from gateway.manage import users
from gateway.policy.rules import validate
from gateway.policy.store import add_rules
from tests.conftest import CLI, Gateway, Upstream, gateway_settings, load_system_policy, serving
from tests.identity.issuer import Issuer, new_key, public_jwk, running_issuer

AUDIENCE = "gateway-api"
LINK = "corp-sso"


@pytest.fixture
async def idp() -> AsyncIterator[Issuer]:
    async with running_issuer() as issuer:
        yield issuer


@asynccontextmanager
async def outside_gateway(
    db_url: str,
    upstream: Upstream,
    tmp_path: Path,
    idp: Issuer,
    settings: dict[str, Any] | None = None,
    **issuer: Any,
) -> AsyncIterator[Gateway]:
    """A gateway trusting `idp` as `corp` (overrides in `issuer`, other settings in `settings`), with the orgs
    `acme` and `globex` and the system roles."""
    trusted = {
        "name": "corp",
        "issuer": idp.issuer,
        "audiences": ["other-api", AUDIENCE],
        "algorithms": ["RS256", "ES256"],
        "link_provider": LINK,
        "min_refetch_seconds": 1,
        **issuer,
    }
    configured = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), trusted_issuers=[trusted], **(settings or {})
    )
    await load_system_policy(db_url)
    async with serving(configured, upstream) as gateway:
        await gateway.org("acme")
        await gateway.org("globex")
        yield gateway


@pytest.fixture
async def gw(db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer) -> AsyncIterator[Gateway]:
    async with outside_gateway(db_url, upstream, tmp_path, idp) as gateway:
        yield gateway


async def _allow(gateway: Gateway, *lines: tuple[str, ...]) -> None:
    """Store policy lines (`p` unless the first value is `g`), validated as every way of adding them does."""
    lines = tuple(line if line[0] == "g" else ("p", *line) for line in lines)
    async with gateway.runtime.services.sessions() as session:
        await add_rules(session, [validate(line[0], line[1:]) for line in lines], origin="api")
        await session.commit()
    await gateway.runtime.refresh()


async def _link(gateway: Gateway, user_id: str, subject: str, provider: str = LINK) -> None:
    """What the sign-in flow's account linking stores: a row, and a version bump with no delta (a full rebuild)."""
    async with gateway.runtime.services.sessions() as session:
        session.add(ExternalIdentity(user_id=user_id, provider=provider, subject=subject))
        await bump_version(session)
        await session.commit()
    await gateway.runtime.refresh()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS built by hand (for what PyJWT refuses to produce)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(sign(signing_input.encode()))


async def test_an_outside_subject_is_decided_by_the_lines_naming_it(gw: Gateway, idp: Issuer) -> None:
    """An unlinked caller is `ext:corp:<sub>`: a policy line naming it allows, anything else is denied, and the
    upstream, the audit line and the rate limits see that subject."""
    await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
    alice, bob = idp.sign(sub="alice"), idp.sign(sub="bob")
    status, _, _ = await gw.call("GET", "/api/orders", token=alice, org="acme")
    assert status == 200
    assert gw.upstream.last.header("x-gateway-user") == "ext:corp:alice"
    assert gw.upstream.last.header("authorization") is None
    assert (await gw.call("POST", "/api/orders", token=alice, org="acme"))[0] == 403
    assert (await gw.call("GET", "/api/orders", token=alice, org="globex"))[0] == 403
    assert (await gw.call("GET", "/api/orders", token=bob, org="acme"))[0] == 403
    events = [e for e in gw.audit_events() if e.get("route") == "/api"]
    assert [(e["subject"], e["granted"]) for e in events] == [
        ("ext:corp:alice", True),
        ("ext:corp:alice", False),
        ("ext:corp:alice", False),
        ("ext:corp:bob", False),
    ]


async def test_an_outside_subject_can_hold_a_role_in_an_org(gw: Gateway, idp: Issuer) -> None:
    """A `g` line gives an `ext:` subject a role in one org: it is decided by that role there (and nowhere else),
    and the upstream gets the role in X-Gateway-Roles."""
    token = idp.sign(sub="carol")
    assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 403
    await _allow(gw, ("g", "ext:corp:carol", "viewer", "acme"))
    assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 200
    assert gw.upstream.last.header("x-gateway-roles") == "viewer"
    assert (await gw.call("POST", "/api/orders", token=token, org="acme"))[0] == 403
    assert (await gw.call("GET", "/api/orders", token=token, org="globex"))[0] == 403


async def test_the_gateways_own_tokens_still_work_beside_outside_ones(gw: Gateway, idp: Issuer) -> None:
    """Configuring a trusted issuer changes nothing for the gateway's own access tokens."""
    await gw.user("own@acme.test", org="acme", role="viewer")
    token = await gw.login("own@acme.test")
    for _ in range(2):
        assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 200


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return f"{head}.{_b64(json.dumps({**claims, 'sub': 'root'}).encode())}.{signature}"


def _refused_tokens(idp: Issuer) -> dict[str, str]:
    now = int(time.time())
    signing = idp.keys[0]
    public_pem = signing.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = idp.claims()
    stranger = new_key("RS256")
    return {
        "wrong-aud": idp.sign(aud="someone-else"),
        "no-aud": idp.sign(aud=None),
        "wrong-iss": idp.sign(iss="https://evil.example"),
        "iss-trailing-slash": idp.sign(iss=idp.issuer + "/"),
        "expired": idp.sign(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "no-exp": idp.sign(exp=None),
        "nbf-in-future": idp.sign(nbf=now + 3600),
        "iat-in-future": idp.sign(iat=now + 3600),
        "no-sub": idp.sign(sub=None),
        "sub-with-space": idp.sign(sub="alice smith"),
        "alg-none": _hand_made({"alg": "none", "kid": signing.kid}, claims, lambda _: b"x"),
        "alg-none-empty-signature": _hand_made({"alg": "none", "kid": signing.kid}, claims, lambda _: b""),
        "hs256-with-the-public-key": _hand_made(
            {"alg": "HS256", "kid": signing.kid, "typ": "JWT"},
            claims,
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "alg-not-allowed": _hand_made({"alg": "RS512", "kid": signing.kid}, claims, lambda _: b"sig"),
        "embedded-jwk": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": "attacker", "jwk": public_jwk(stranger, "attacker")}
        ),
        "embedded-jwk-with-a-known-kid": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": signing.kid, "jwk": public_jwk(stranger, signing.kid)}
        ),
        "jku": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": "attacker", "jku": "https://evil.example/jwks"}
        ),
        "x5u": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": signing.kid, "x5u": "https://e.x"}),
        "unknown-key-known-kid": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": signing.kid}),
        "unknown-key-unknown-kid": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "nope"}),
        "crit": idp.sign(headers={"crit": ["exp"]}),
        "tampered": _tampered(idp.sign(jti="t")),
    }


REFUSED = [
    "wrong-aud",
    "no-aud",
    "wrong-iss",
    "iss-trailing-slash",
    "expired",
    "no-exp",
    "nbf-in-future",
    "iat-in-future",
    "no-sub",
    "sub-with-space",
    "alg-none",
    "alg-none-empty-signature",
    "hs256-with-the-public-key",
    "alg-not-allowed",
    "embedded-jwk",
    "embedded-jwk-with-a-known-kid",
    "jku",
    "x5u",
    "unknown-key-known-kid",
    "unknown-key-unknown-kid",
    "crit",
    "tampered",
]


@pytest.mark.parametrize("case", REFUSED)
async def test_a_bad_outside_token_is_refused(gw: Gateway, idp: Issuer, case: str) -> None:
    """Each token RFC 8725 and REQ-B20 rule out is 401 `invalid_token`, even for a subject every line allows, and
    nothing reaches the upstream."""
    await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
    good = idp.sign()
    assert (await gw.call("GET", "/api/orders", token=good, org="acme"))[0] == 200
    seen = len(gw.upstream.seen)
    token = _refused_tokens(idp)[case]
    status, headers, body = await gw.call("GET", "/api/orders", token=token, org="acme")
    assert status == 401, body
    assert headers["www-authenticate"].startswith("Bearer")
    assert len(gw.upstream.seen) == seen


async def test_a_token_bound_to_an_org_by_its_claim(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """With `org_claim`, the token's org is the org: no X-Org needed, another org named in the request is refused
    (as for an API key), and a token without the claim is refused."""
    async with outside_gateway(db_url, upstream, tmp_path, idp, org_claim="org") as gw:
        await _allow(gw, ("ext:corp:alice", "*", "/api/*", "GET", "allow"))
        token = idp.sign(org="acme")
        status, _, _ = await gw.call("GET", "/api/orders", token=token)
        assert status == 200
        assert gw.upstream.last.header("x-gateway-org") == "acme"
        assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 200
        assert (await gw.call("GET", "/api/orders", token=token, org="globex"))[0] == 403
        assert (await gw.call("GET", "/api/orders", token=idp.sign(), org="acme"))[0] == 401


async def test_a_rotated_key_works_on_its_first_request(gw: Gateway, idp: Issuer) -> None:
    """The issuer replaces its key: the first token signed with the new one waits for one refetch and is allowed;
    the withdrawn key's tokens, new or verified before, are refused once the set has been fetched again
    (REQ-B22)."""
    await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
    old = idp.keys[0]
    before = idp.sign()
    assert (await gw.call("GET", "/api/orders", token=before, org="acme"))[0] == 200
    fetched = idp.jwks_hits
    await asyncio.sleep(1.1)  # min_refetch_seconds = 1 since the fetch at start
    idp.rotate("ES256")
    assert (await gw.call("GET", "/api/orders", token=idp.sign(), org="acme"))[0] == 200
    assert idp.jwks_hits == fetched + 1
    assert (await gw.call("GET", "/api/orders", token=idp.sign(key=old, jti="fresh"), org="acme"))[0] == 401
    assert (await gw.call("GET", "/api/orders", token=before, org="acme"))[0] == 401


async def test_random_kids_cause_at_most_one_fetch_per_interval(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """1000 tokens with made-up kids, 100 at a time, through the proxy: no more key-set fetches than one per
    `min_refetch_seconds` (here 30: none besides the one at start), every one refused (REQ-B22)."""
    async with outside_gateway(db_url, upstream, tmp_path, idp, min_refetch_seconds=30) as gw:
        fetched = idp.jwks_hits
        assert fetched == 1
        stranger = new_key("RS256")
        claims = idp.claims()
        for _ in range(10):
            tokens = [
                jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": secrets.token_urlsafe(8)})
                for _ in range(100)
            ]
            statuses = await asyncio.gather(*(gw.call("GET", "/api/x", token=t, org="acme") for t in tokens))
            assert {status for status, _, _ in statuses} == {401}
        assert idp.jwks_hits == fetched


async def test_random_kids_after_the_interval_share_one_fetch(gw: Gateway, idp: Issuer) -> None:
    """Once the interval has passed, 200 concurrent tokens with made-up kids cost one fetch between them."""
    await asyncio.sleep(1.1)
    fetched = idp.jwks_hits
    stranger = new_key("RS256")
    tokens = [
        jwt.encode(idp.claims(), stranger, algorithm="RS256", headers={"kid": secrets.token_urlsafe(8)})
        for _ in range(200)
    ]
    statuses = await asyncio.gather(*(gw.call("GET", "/api/x", token=t, org="acme") for t in tokens))
    assert {status for status, _, _ in statuses} == {401}
    assert idp.jwks_hits - fetched <= 2  # one per started second of the flood, at most


async def test_the_issuer_down_keeps_its_cached_keys_serving(gw: Gateway, idp: Issuer) -> None:
    """With the issuer down, tokens signed with a cached key keep working and unknown kids are refused quickly;
    nothing is loosened (REQ-B21)."""
    await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
    assert (await gw.call("GET", "/api/orders", token=idp.sign(), org="acme"))[0] == 200
    idp.down = True
    await asyncio.sleep(1.1)
    new = idp.add_key("RS256")
    started = time.monotonic()
    assert (await gw.call("GET", "/api/orders", token=idp.sign(key=new), org="acme"))[0] == 401
    assert time.monotonic() - started < 5
    assert (await gw.call("GET", "/api/orders", token=idp.sign(key=idp.keys[1], jti="2"), org="acme"))[0] == 200


async def test_an_issuer_down_at_start_does_not_stop_the_gateway(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """The gateway starts while the issuer is down; its tokens are refused until a later fetch succeeds."""
    idp.down = True
    async with outside_gateway(db_url, upstream, tmp_path, idp) as gw:
        await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
        token = idp.sign()
        assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 401
        idp.down = False
        await asyncio.sleep(1.1)
        assert (await gw.call("GET", "/api/orders", token=idp.sign(jti="again"), org="acme"))[0] == 200


async def test_a_linked_user_acts_as_themselves_until_disabled(gw: Gateway, idp: Issuer) -> None:
    """An outside token whose subject is linked (under the issuer's link_provider) is decided as that user: their
    memberships apply and the upstream gets their id. Disabling the user refuses the same token at once."""
    user_id = await gw.user("alice@acme.test", org="acme", role="viewer")
    token = idp.sign(sub="alice-at-corp")
    assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 403  # not linked yet: ext:
    await _link(gw, user_id, "alice-at-corp")
    assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 200
    assert gw.upstream.last.header("x-gateway-user") == user_id
    assert (await gw.call("POST", "/api/orders", token=token, org="acme"))[0] == 403  # a viewer
    assert gw.audit_events()[-1]["subject"] == "user:" + user_id
    async with gw.runtime.services.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        await users.set_disabled(session, CLI, user, disabled=True)
        await session.commit()
    await gw.runtime.refresh()
    status, _, _ = await gw.call("GET", "/api/orders", token=token, org="acme")
    assert status == 401


async def test_an_entra_style_subject_of_two_claims_maps_to_the_user_its_sign_in_linked(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """`subject_claim = "tid:oid"` keys a caller as Entra's sign-in links them (`<tid>:<oid>`): the linked user;
    a token missing one of the claims is refused."""
    async with outside_gateway(db_url, upstream, tmp_path, idp, subject_claim="tid:oid") as gateway:
        user_id = await gateway.user("erin@acme.test", org="acme", role="viewer")
        await _link(gateway, user_id, "tenant-1:object-9")
        token = idp.sign(sub="pairwise-sub", tid="tenant-1", oid="object-9")
        assert (await gateway.call("GET", "/api/orders", token=token, org="acme"))[0] == 200
        assert gateway.upstream.last.header("x-gateway-user") == user_id
        missing = idp.sign(sub="pairwise-sub", tid="tenant-1")
        assert (await gateway.call("GET", "/api/orders", token=missing, org="acme"))[0] == 401


async def test_a_link_under_another_provider_does_not_count(gw: Gateway, idp: Issuer) -> None:
    """Only links made under the issuer's `link_provider` map its tokens to a user."""
    user_id = await gw.user("alice@acme.test", org="acme", role="viewer")
    await _link(gw, user_id, "alice", provider="github")
    assert (await gw.call("GET", "/api/orders", token=idp.sign(), org="acme"))[0] == 403


async def test_the_control_plane_takes_a_linked_users_outside_token(gw: Gateway, idp: Issuer) -> None:
    """GET /auth/me with an outside token answers for the linked user; an unlinked subject gets 401 there and 403
    on the management API (it has no account to act as)."""
    user_id = await gw.user("alice@acme.test", org="acme", role="admin")
    await _link(gw, user_id, "alice")
    status, _, body = await gw.call("GET", "/auth/me", token=idp.sign())
    assert status == 200, body
    me = json.loads(body)
    assert me["email"] == "alice@acme.test"
    stranger = idp.sign(sub="mallory")
    assert (await gw.call("GET", "/auth/me", token=stranger))[0] == 401
    await _allow(gw, ("ext:corp:mallory", "*", "admin:/*", "*", "allow"))
    assert (await gw.call("GET", "/admin/orgs/acme/members", token=stranger))[0] == 403
    assert (await gw.call("GET", "/admin/orgs/acme/members", token=idp.sign(jti="x")))[0] == 200


async def _forward_auth(gateway: Gateway, token: str, method: str = "GET", org: str = "acme") -> tuple[int, Any]:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": "/api/orders", "X-Org": org}
    headers["Authorization"] = f"Bearer {token}"
    async with gateway.http.get(gateway.url + "/authz/forward", headers=headers) as response:
        return response.status, response.headers.copy()


async def test_forward_auth_takes_outside_tokens_and_waits_for_a_rotated_key(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """Forward-auth decides outside tokens as the proxy does, including the one refetch a newly rotated key
    needs."""
    async with outside_gateway(db_url, upstream, tmp_path, idp, {"trusted_proxies": ["127.0.0.1"]}) as gw:
        await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
        status, headers = await _forward_auth(gw, idp.sign())
        assert (status, headers["X-Gateway-User"]) == (200, "ext:corp:alice")
        assert (await _forward_auth(gw, idp.sign(), method="DELETE"))[0] == 403
        assert (await _forward_auth(gw, idp.sign(aud="elsewhere")))[0] == 401
        await asyncio.sleep(1.1)
        idp.rotate("RS256")
        assert (await _forward_auth(gw, idp.sign()))[0] == 200
        assert gw.upstream.seen == []


async def test_an_org_admin_grants_an_outside_subject_paths_in_the_org(gw: Gateway, idp: Issuer) -> None:
    """Through the management API, an org's admin may add a `p` line for an `ext:` subject in the org (and it
    then decides), but not give it a role with a `g` line."""
    await gw.user("admin@acme.test", org="acme", role="admin")
    admin = await gw.login("admin@acme.test")
    line = {"lines": ["p, ext:corp:alice, acme, /api/*, GET"]}
    status, _, body = await gw.call("POST", "/admin/orgs/acme/policies", token=admin, json=line)
    assert status == 201, body
    assert (await gw.call("GET", "/api/orders", token=idp.sign(), org="acme"))[0] == 200
    role = {"lines": ["g, ext:corp:alice, admin, acme"]}
    status, _, body = await gw.call("POST", "/admin/orgs/acme/policies", token=admin, json=role)
    assert status == 422, body


async def test_a_cached_outside_token_stops_at_its_expiry(
    db_url: str, upstream: Upstream, tmp_path: Path, idp: Issuer
) -> None:
    """The verified-token cache keeps a token only until its `exp` (plus the leeway, here none)."""
    async with outside_gateway(db_url, upstream, tmp_path, idp, leeway_seconds=0) as gw:
        await _allow(gw, ("ext:corp:alice", "acme", "/api/*", "GET", "allow"))
        token = idp.sign(exp=int(time.time()) + 2)
        assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 200
        await asyncio.sleep(2.2)
        assert (await gw.call("GET", "/api/orders", token=token, org="acme"))[0] == 401
