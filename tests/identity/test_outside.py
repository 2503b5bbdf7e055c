"""Which bearer tokens are a trusted issuer's, and the verified-token cache (identity/outside.py) against a real
local IdP (REQ-B20, REQ-B22)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import InvalidToken
from gateway.identity.outside import OutsideTokens, SigningKeyUnknown
from gateway.identity.tokens import KeyRing, TokenService
from gateway.settings import Tokens, TrustedIssuer
from tests.identity.issuer import Issuer, running_issuer


@pytest.fixture
async def idp() -> AsyncIterator[Issuer]:
    async with running_issuer() as issuer:
        yield issuer


@pytest.fixture
async def outside(idp: Issuer) -> AsyncIterator[OutsideTokens]:
    trusted = TrustedIssuer(
        name="corp",
        issuer=idp.issuer,
        audiences=("gateway-api",),
        algorithms=("RS256",),
        min_refetch_seconds=30,
    )
    async with aiohttp.ClientSession() as http:
        tokens = OutsideTokens([trusted], http)
        await tokens.start()
        yield tokens
        await tokens.close()


async def test_only_a_trusted_issuers_tokens_are_claimed(outside: OutsideTokens, idp: Issuer) -> None:
    """The gateway's own tokens, other issuers' and non-JWTs are not claimed (None: someone else answers); a
    trusted issuer's token is verified into its claims and `ext:` subject."""
    key = Ed25519PrivateKey.generate()
    ours, _ = TokenService(Tokens(), KeyRing("k", {"k": key}, {"k": key.public_key()})).issue_access_token(
        "u1", session_id="s1"
    )
    assert outside.verify(ours) is None
    assert outside.verify(idp.sign(iss="https://elsewhere.example")) is None
    assert outside.verify("gw_live_not_a_jwt") is None
    claims = outside.verify(idp.sign(sub="alice", jti="j1"))
    assert claims is not None
    assert (claims.external, claims.subject, claims.token_id, claims.org) == ("ext:corp:alice", "alice", "j1", None)


async def test_a_verified_token_is_cached_until_the_keys_change(outside: OutsideTokens, idp: Issuer) -> None:
    """The same bytes are verified once while the issuer's key set stays the same (a fetch bringing the same keys
    changes nothing); once a fetch shows the key withdrawn, the token is verified again and refused."""
    token = idp.sign()
    first = outside.verify(token)
    assert outside.verify(token) is first
    keys = outside.key_sets["corp"]
    await keys.refresh()
    assert outside.verify(token) is first
    idp.rotate()
    await keys.refresh()
    with pytest.raises(InvalidToken):
        outside.verify(token)
    assert outside.verify(idp.sign(jti="signed-with-the-new-key")) is not None


async def test_an_unknown_kid_asks_for_a_refetch_only_when_one_is_allowed(outside: OutsideTokens, idp: Issuer) -> None:
    """Right after the fetch at start the throttle is closed: an unknown kid is a plain 401 at once, never a wait
    (at most one fetch per 30 s, REQ-B22)."""
    idp.rotate()
    with pytest.raises(InvalidToken) as refused:
        outside.verify(idp.sign())
    assert not isinstance(refused.value, SigningKeyUnknown)
    assert idp.jwks_hits == 1
