"""What a decision costs with an outside access token against one of the gateway's own, in process.

    python bench/outside_tokens.py [--requests 20000]

The data plane's two calls, `access.credentials.authenticate` then `access.decisions.enforce`, against the system
policy plus one line naming an outside subject, for: the gateway's own access token (with and without a trusted
issuer configured: the outside check costs our tokens one dict lookup), an outside token of an unlinked subject
(`ext:corp:alice`), and one whose subject is linked to a user. Then the one-time cost of verifying a token never
seen before (the signature; every later request hits the cache): ours (EdDSA) and the issuer's (RS256, ES256).
The issuer is a real HTTP server on 127.0.0.1 serving its JWK Set; it is fetched once, at start, and never during
the measurement (the script checks). Prints the median and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.access.credentials import authenticate
from gateway.access.decisions import enforce
from gateway.identity.outside import OutsideTokens
from gateway.identity.tokens import KeyRing, TokenService
from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.rules import parse_files, parse_text
from gateway.settings import Tokens, TrustedIssuer

ROOT = Path(__file__).resolve().parents[1]
USER = "00000000-0000-4000-8000-000000000001"
LINKED = "00000000-0000-4000-8000-000000000002"


def _state() -> HotState:
    rules = parse_files(sorted((ROOT / "policies").glob("*.csv")))
    state = HotState(ROOT / "model.conf")
    extra = parse_text(
        f"g, user:{USER}, viewer, acme\ng, user:{LINKED}, viewer, acme\np, ext:corp:alice, acme, /api/*, GET\n"
    )
    state.install(
        StateRows(
            rules=(*rules, *extra),
            orgs=(OrgRef(id="o1", slug="acme"),),
            version=1,
            links=(("corp-sso", "linked-bob", LINKED),),
        )
    )
    return state


def _measure(call: Callable[[], object], count: int) -> tuple[float, float]:
    for _ in range(min(count, 1000)):
        call()
    samples = []
    gc.disable()
    try:
        for _ in range(count):
            started = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def _once(make: Callable[[], str], verify: Callable[[str], object], count: int) -> tuple[float, float]:
    tokens = [make() for _ in range(count)]
    samples = []
    for token in tokens:
        started = time.perf_counter_ns()
        verify(token)
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


async def main(requests: int) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "r1", "use": "sig"},
            {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "e1", "use": "sig"},
        ]
    }
    fetches = 0

    async def serve_keys(request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.Response(body=json.dumps(jwks), content_type="application/json")

    app = web.Application()
    app.router.add_get("/keys", serve_keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    issuer = f"http://127.0.0.1:{port}"
    trusted = TrustedIssuer(
        name="corp",
        issuer=issuer,
        jwks_url=issuer + "/keys",
        audiences=("gateway-api",),
        algorithms=("RS256", "ES256"),
        link_provider="corp-sso",
    )
    own = Ed25519PrivateKey.generate()
    tokens = TokenService(Tokens(), KeyRing("k1", {"k1": own}, {"k1": own.public_key()}))
    state = _state()
    async with aiohttp.ClientSession() as http:
        outside = OutsideTokens([trusted], http)
        await outside.start()
        try:
            now = int(time.time())

            def claims(sub: str) -> dict[str, object]:
                return {"iss": issuer, "aud": "gateway-api", "sub": sub, "iat": now, "exp": now + 3600}

            ours, _ = tokens.issue_access_token(USER, session_id="s1")
            ext = jwt.encode(claims("alice"), rsa_key, algorithm="RS256", headers={"kid": "r1"})
            linked = jwt.encode(claims("linked-bob"), rsa_key, algorithm="RS256", headers={"kid": "r1"})

            def decide(token: str, *, with_outside: bool = True) -> Callable[[], object]:
                header = "Bearer " + token

                def call() -> object:
                    principal = authenticate(
                        tokens, header, state=state, client_ip="127.0.0.1", outside=outside if with_outside else None
                    )
                    return enforce(state, principal.subject, "acme", "/api/orders", "GET", route="/api")

                return call

            print(f"authenticate + enforce, {requests} requests each (median / p99, microseconds)")
            cases = [
                ("our token, no trusted issuer", decide(ours, with_outside=False)),
                ("our token, a trusted issuer configured", decide(ours)),
                ("outside token, ext:corp:alice", decide(ext)),
                ("outside token, linked user", decide(linked)),
            ]
            for name, call in cases:
                median, p99 = _measure(call, requests)
                print(f"  {name:<42} {median:7.2f} {p99:8.2f}")
            first = max(200, requests // 50)
            print(f"first sight of a token (signature check), {first} new tokens each")
            once = [
                (
                    "our token (EdDSA)",
                    lambda: tokens.issue_access_token(USER, session_id=secrets.token_hex(4))[0],
                    tokens.verify,
                ),
                (
                    "outside token (RS256)",
                    lambda: jwt.encode(
                        {**claims("alice"), "jti": secrets.token_hex(4)},
                        rsa_key,
                        algorithm="RS256",
                        headers={"kid": "r1"},
                    ),
                    outside.verify,
                ),
                (
                    "outside token (ES256)",
                    lambda: jwt.encode(
                        {**claims("alice"), "jti": secrets.token_hex(4)},
                        ec_key,
                        algorithm="ES256",
                        headers={"kid": "e1"},
                    ),
                    outside.verify,
                ),
            ]
            for name, make, verify in once:
                median, p99 = _once(make, verify, first)
                print(f"  {name:<42} {median:7.2f} {p99:8.2f}")
            print(f"key-set fetches: {fetches} (the one at start; none per request)")
            assert fetches == 1
        finally:
            await outside.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().requests))
