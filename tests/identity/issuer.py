"""A real outside identity provider for the tests: discovery and a JWK Set over HTTP on an ephemeral port, with keys
that rotate, a switch that takes it down, counters of what was fetched, and a signer for its tokens."""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Ed25519PrivateKey


def new_key(alg: str) -> PrivateKey:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return Ed25519PrivateKey.generate()
    raise ValueError(alg)


def public_jwk(key: PrivateKey, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk = {**jwk, "kid": kid, "use": "sig"}
    if alg is not None:
        jwk["alg"] = alg
    return jwk


@dataclass
class SigningKey:
    kid: str
    alg: str
    key: PrivateKey


@dataclass
class Issuer:
    """An outside IdP. `issuer` is its identifier (its base URL); `keys` are published, `keys[0]` signs."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    down: bool = False
    """Answer 503 to everything (an outage)."""
    delay: float = 0.0
    """Seconds to wait before answering the key set (a slow IdP)."""
    metadata_issuer: str | None = None
    """The `issuer` the discovery document claims (default: the real one)."""
    extra: list[dict[str, Any]] = field(default_factory=list)
    """More JWKs published as they are (an `oct` key, a private key...)."""
    jwks_hits: int = 0
    discovery_hits: int = 0

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return self.url + "/keys"

    def add_key(self, alg: str = "RS256", *, kid: str | None = None) -> SigningKey:
        """Publish a new key that signs from now on (the older ones stay published)."""
        signing = SigningKey(kid or secrets.token_urlsafe(8), alg, new_key(alg))
        self.keys.insert(0, signing)
        return signing

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Replace every published key by a new one."""
        self.keys.clear()
        return self.add_key(alg)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "gateway-api",
            "sub": "alice",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """A token signed with `key` (default: the current signing key), with `kid` and `alg` in its header."""
        signing = key or self.keys[0]
        body = claims if claims is not None else self.claims(**overrides)
        return jwt.encode(body, signing.key, algorithm=signing.alg, headers={"kid": signing.kid, **(headers or {})})

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k.key, k.kid, k.alg) for k in self.keys] + self.extra}


async def _discovery(issuer: Issuer, request: web.Request) -> web.Response:
    issuer.discovery_hits += 1
    if issuer.down:
        return web.Response(status=503)
    document = {
        "issuer": issuer.metadata_issuer or issuer.issuer,
        "jwks_uri": issuer.jwks_url,
        "authorization_endpoint": issuer.url + "/authorize",
        "token_endpoint": issuer.url + "/token",
        "userinfo_endpoint": issuer.url + "/userinfo",
        "authorization_response_iss_parameter_supported": True,
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }
    return web.Response(body=json.dumps(document), content_type="application/json")


async def _keys(issuer: Issuer, request: web.Request) -> web.Response:
    issuer.jwks_hits += 1
    if issuer.delay:
        await asyncio.sleep(issuer.delay)
    if issuer.down:
        return web.Response(status=503)
    return web.Response(body=json.dumps(issuer.jwks()), content_type="application/json")


@asynccontextmanager
async def running_issuer(alg: str = "RS256") -> AsyncIterator[Issuer]:
    """An Issuer with one `alg` key, serving on 127.0.0.1 until the block ends."""
    issuer = Issuer()
    issuer.add_key(alg)
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", functools.partial(_discovery, issuer))
    app.router.add_get("/keys", functools.partial(_keys, issuer))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    issuer.url = f"http://127.0.0.1:{port}"
    try:
        yield issuer
    finally:
        await runner.cleanup()
