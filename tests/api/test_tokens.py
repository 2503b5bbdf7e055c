"""Access tokens under attack (REQ-16 to REQ-21, REQ-24), key rotation, bootstrap (REQ-40) and login timing
(REQ-7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from tests.conftest import PASSWORD, Gateway, Upstream, gateway_settings, run_cli, serving


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(gateway: Gateway, user_id: str, session: str, **extra: Any) -> dict[str, Any]:
    settings = gateway.runtime.settings.tokens
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j",
        "sid": session,
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(gateway: Gateway, claims: dict[str, Any], **header: Any) -> str:
    ring = gateway.runtime.services.tokens.ring
    headers = {"kid": ring.active_kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, ring.private_keys[ring.active_kid], algorithm="EdDSA", headers=headers)


async def _session(gateway: Gateway) -> tuple[str, dict[str, Any]]:
    user_id = await gateway.user("ann@example.test")
    _, _, raw = await gateway.call("POST", "/auth/login", json={"email": "ann@example.test", "password": PASSWORD})
    return user_id, json.loads(raw)


async def _me(gateway: Gateway, token: str, **headers: str) -> tuple[int, Any]:
    status, response_headers, _ = await gateway.call("GET", "/auth/me", token=token, headers=headers)
    return status, response_headers


async def test_forged_and_confused_tokens_are_401(gateway: Gateway) -> None:
    """alg none/noNE, HS256 keyed with the public JWK, claims out of bounds, foreign header keys, odd kids and
    non-canonical spellings of a valid token (padding, the standard base64 alphabet) are all 401 with
    error="invalid_token", never 500."""
    user_id, login = await _session(gateway)
    sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
    good = _claims(gateway, user_id, sid)
    ring = gateway.runtime.services.tokens.ring
    public = json.dumps(OKPAlgorithm.to_jwk(ring.public_keys[ring.active_kid], as_dict=True)).encode()
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": ring.active_kid}).encode())
    body = _b64(json.dumps(good).encode())
    confused = f"{header}.{body}." + _b64(hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest())
    none_upper = _b64(json.dumps({"alg": "noNE", "typ": "at+jwt", "kid": ring.active_kid}).encode()) + f".{body}."
    attacker = Ed25519PrivateKey.generate()
    attacker_jwk = OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    forged = {
        "hs256-with-public-key": confused,
        "alg-noNE": none_upper,
        "nbf-in-future": _sign(gateway, _claims(gateway, user_id, sid, nbf=int(time.time()) + 600)),
        "no-aud": _sign(gateway, _claims(gateway, user_id, sid, aud=None)),
        "no-sid": _sign(gateway, _claims(gateway, user_id, sid, sid=None)),
        "embedded-jwk": jwt.encode(
            good, attacker, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": "attacker", "jwk": attacker_jwk}
        ),
        "jku": jwt.encode(
            good, attacker, algorithm="EdDSA", headers={"typ": "at+jwt", "jku": "http://127.0.0.1:9/jwks.json"}
        ),
        "kid-sql": _sign(gateway, good, kid="' OR 1=1--"),
        "kid-path": _sign(gateway, good, kid="../../x"),
        "identity-token-type": _sign(gateway, good, typ="gw-identity+jwt"),
        "refresh-token": login["refresh_token"],
        "padded-signature": login["access_token"] + "==",
        "padded-header": login["access_token"].split(".")[0] + "=." + login["access_token"].split(".", 1)[1],
        "standard-alphabet": login["access_token"].replace("-", "+").replace("_", "/")
        if "-" in login["access_token"] or "_" in login["access_token"]
        else login["access_token"] + "+",
    }
    for name, token in forged.items():
        status, headers = await _me(gateway, token)
        assert status == 401, name
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', name
    assert (await _me(gateway, _sign(gateway, good)))[0] == 200, "the control token is accepted"


async def test_tokens_only_in_the_bearer_header(gateway: Gateway) -> None:
    """A token in the query string or under another scheme is not a credential; an access token is not a
    refresh token."""
    _, login = await _session(gateway)
    token = login["access_token"]
    for path in (f"/auth/me?access_token={token}", f"/auth/me?api_key={token}"):
        assert (await gateway.call("GET", path))[0] == 401
    assert (await gateway.call("GET", "/auth/me", headers={"Authorization": f"Basic {token}"}))[0] == 401
    assert (await gateway.call("POST", "/auth/refresh", json={"refresh_token": token}))[0] == 401


async def test_jwks_is_public_only_and_rotation_keeps_old_tokens(gateway: Gateway, db_url: str) -> None:
    """The JWKS has public members only, with kid, alg and use; after `gateway signing-keys rotate` new tokens
    carry the new kid and tokens signed before still verify."""
    _, login = await _session(gateway)
    old = login["access_token"]
    rotated = run_cli(["signing-keys", "rotate"], db_url)
    assert rotated.returncode == 0, rotated.stderr
    await gateway.runtime.refresh()
    _, _, raw = await gateway.call("GET", "/.well-known/jwks.json")
    keys = json.loads(raw)["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys()
        assert (key["alg"], key["use"]) == ("EdDSA", "sig")
    _, _, raw = await gateway.call("POST", "/auth/login", json={"email": "ann@example.test", "password": PASSWORD})
    new = json.loads(raw)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    assert {jwt.get_unverified_header(t)["kid"] for t in (old, new)} == {k["kid"] for k in keys}
    assert (await _me(gateway, old))[0] == 200
    assert (await _me(gateway, new))[0] == 200
    pruned = run_cli(["signing-keys", "prune", "--older-than-seconds", "3600"], db_url)
    assert "0 signing key(s) removed" in pruned.stdout, "keys younger than the token lifetime stay"


async def test_no_default_admin_and_a_one_time_bootstrap(gateway: Gateway, db_url: str) -> None:
    """A fresh deployment has no admin/admin; a bootstrap token creates the first superadmin once, and no token
    can be made or used once one exists."""
    for email, password in (("admin@localhost.test", "admin"), ("root@localhost.test", "root")):
        body = {"email": email, "password": password}
        assert (await gateway.call("POST", "/auth/login", json=body))[0] == 401
    made = run_cli(["bootstrap-token"], db_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    body = {"token": token, "email": "first@example.test", "password": "violet tram overture"}
    status, _, raw = await gateway.call("POST", "/auth/bootstrap", json=body)
    assert status == 201, raw
    await gateway.runtime.refresh()
    _, _, login = await gateway.call(
        "POST", "/auth/login", json={"email": "first@example.test", "password": "violet tram overture"}
    )
    root = json.loads(login)["access_token"]
    assert (await gateway.call("GET", "/admin/audit", token=root))[0] == 200
    again = {**body, "email": "second@example.test"}
    assert (await gateway.call("POST", "/auth/bootstrap", json=again))[0] == 403
    assert run_cli(["bootstrap-token"], db_url).returncode == 1


async def test_login_takes_as_long_for_unknown_emails(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """With production Argon2 cost, unknown emails and wrong passwords take the same time (a dummy hash runs):
    medians within 25 % (REQ-7)."""
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "a.jsonl"),
        passwords={"memory_kib": 19456, "time_cost": 2, "parallelism": 1},
        login={"free_failures": 1000},
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")

        async def timed(email: str) -> float:
            started = time.perf_counter()
            await gateway.call("POST", "/auth/login", json={"email": email, "password": "wrong password!"})
            return time.perf_counter() - started

        known, unknown = [], []
        for _ in range(15):
            known.append(await timed("ann@example.test"))
            unknown.append(await timed("nobody@example.test"))
        ratio = statistics.median(unknown) / statistics.median(known)
        assert 0.75 < ratio < 1.25, (statistics.median(known), statistics.median(unknown))


# The routes that need no token, each with the first field an empty JSON body lacks (a 422 naming it).
PUBLIC_AUTH = {
    ("POST", "/auth/login"): "email",
    ("POST", "/auth/login/mfa"): "mfa_token",
    ("POST", "/auth/refresh"): "refresh_token",
    ("POST", "/auth/register"): "email",
    ("POST", "/auth/verify-email"): "token",
    ("POST", "/auth/forgot-password"): "email",
    ("POST", "/auth/reset-password"): "token",
    ("POST", "/auth/bootstrap"): "token",
    ("POST", "/auth/invitations/lookup"): "token",
    ("POST", "/auth/invitations/accept"): "token",
    ("POST", "/auth/invitations/decline"): "token",
}
# Public routes a browser reaches by navigation (outside identity providers), with their answer to a request
# without a token: the list, and 404 for a provider that is not configured (start, callback).
PUBLIC_BROWSER = {
    ("GET", "/auth/providers"): 200,
    ("GET", "/auth/providers/{name:str}/start"): 404,
    ("GET", "/auth/providers/{name:str}/callback"): 404,
}


async def test_every_auth_route_needs_a_token_except_the_public_ones(gateway: Gateway) -> None:
    """Without credentials every /auth route is 401, except the allowlists: PUBLIC_AUTH answers 422 to an empty
    body, naming the missing field; PUBLIC_BROWSER answers as listed."""
    routes = {
        (method, route.path)
        for route in gateway.control_routes()
        if route.path.startswith("/auth") and not route.path.startswith("/auth/schema")
        for method in getattr(route, "methods", ())
        if method not in ("HEAD", "OPTIONS")
    }
    assert routes >= set(PUBLIC_AUTH) | set(PUBLIC_BROWSER)
    for method, path in sorted(routes):
        concrete = path.replace("{session:str}", "00000000-0000-0000-0000-000000000000")
        concrete = concrete.replace("{name:str}", "nosuch").replace("{identity:str}", "nosuch")
        status, headers, body = await gateway.call(method, concrete, json={}, allow_redirects=False)
        problem = json.loads(body)
        if (method, path) in PUBLIC_BROWSER:
            assert status == PUBLIC_BROWSER[method, path], (method, path, status, problem)
        elif (method, path) in PUBLIC_AUTH:
            assert status == 422, (method, path, status, problem)
            assert problem["field"] == PUBLIC_AUTH[method, path], (method, path, problem)
        else:
            assert status == 401, (method, path, status, problem)
            assert headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
