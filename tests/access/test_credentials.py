"""Authentication on the data plane (gateway/access/credentials.py): missing and rejected credentials are 401
with the right challenge, and never forwarded. On the bare data plane: no database."""

from __future__ import annotations

import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import BareGateway

PROBLEM = "application/problem+json"


def _forge(
    claims: dict[str, object], *, key: Ed25519PrivateKey | None = None, kid: str = "x", typ: str = "at+jwt"
) -> str:
    return jwt.encode(claims, key or Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid, "typ": typ})


async def test_bad_credentials_are_401_with_bearer_challenge(bare: BareGateway) -> None:
    """No token, garbage, bad signature, expired, wrong audience/issuer, wrong typ, alg none -> 401."""
    tokens = bare.tokens
    ring = bare.runtime.services.tokens.ring
    kid = ring.active_kid
    key = ring.private_keys[kid]
    settings = bare.runtime.settings.tokens
    now = int(time.time())
    good = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": "u",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }

    status, headers, body = await bare.call("GET", "/api/x", org="acme")
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
        "alg-none": jwt.encode(good, "", algorithm="none", headers={"kid": kid, "typ": "at+jwt"}),
        "tampered": tokens["viewer"][:-4] + ("AAAA" if not tokens["viewer"].endswith("AAAA") else "BBBB"),
    }
    for name, token in bad_tokens.items():
        status, headers, body = await bare.call("GET", "/api/x", token=token, org="acme")
        assert status == 401, name
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', name
        assert json.loads(body)["type"] == "urn:gateway:problem:invalid-token", name
    status, headers, _ = await bare.call(
        "GET", "/api/x", org="acme", headers={"Authorization": f"Basic {tokens['viewer']}"}
    )
    assert status == 401
    assert bare.upstream.seen == [], "no rejected request may reach the upstream"
