"""An outside issuer's keys (identity/jwks.py) against a real local IdP: discovery, rotation, the refetch throttle,
outages (REQ-B21, REQ-B22, REQ-B23)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.identity.jwks import RemoteError, RemoteKeys, discover, import_key, is_allowed_url
from tests.identity.issuer import Issuer, public_jwk, running_issuer

ALL = frozenset({"RS256", "ES256", "EdDSA"})


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def idp() -> AsyncIterator[Issuer]:
    async with running_issuer() as issuer:
        yield issuer


def _keys(idp: Issuer, http: aiohttp.ClientSession, clock: Clock, **kwargs: object) -> RemoteKeys:
    return RemoteKeys(issuer=idp.issuer, http=http, algorithms=["RS256", "ES256"], clock=clock, **kwargs)  # type: ignore[arg-type]


async def test_discovery_reads_the_metadata(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """Discovery returns the endpoints, the jwks_uri and RFC 9207's flag from the provider's document."""
    metadata = await discover(idp.issuer, http)
    assert metadata.issuer == idp.issuer
    assert metadata.jwks_uri == idp.jwks_url
    assert metadata.token_endpoint == idp.url + "/token"
    assert metadata.authorization_response_iss_parameter_supported is True
    assert metadata.id_token_signing_alg_values_supported == ("RS256", "ES256")


@pytest.mark.parametrize("claimed", ["{url}/", "{url}/other", "https://evil.example", ""], ids=str)
async def test_discovery_refuses_another_issuer(idp: Issuer, http: aiohttp.ClientSession, claimed: str) -> None:
    """A document whose `issuer` is not exactly the configured one is refused (no trailing-slash folding)."""
    idp.metadata_issuer = claimed.format(url=idp.url) or None
    if not claimed:
        idp.metadata_issuer = "x"
    with pytest.raises(RemoteError, match="issuer"):
        await discover(idp.issuer, http)


async def test_a_mismatched_discovery_leaves_no_keys(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """With a lying discovery document, no key is ever trusted (REQ-B21): the key set is never fetched."""
    idp.metadata_issuer = "https://someone.else"
    keys = _keys(idp, http, Clock())
    await keys.refresh()
    assert keys.key(idp.keys[0].kid) is None
    assert idp.jwks_hits == 0


async def test_start_fetches_and_lookups_stay_in_memory(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """After start, a known kid is found synchronously; 1000 lookups make no request."""
    keys = _keys(idp, http, Clock())
    await keys.start()
    try:
        kid = idp.keys[0].kid
        for _ in range(1000):
            found = keys.key(kid)
        assert found is not None and found.algorithms == {"RS256"}
        assert (idp.discovery_hits, idp.jwks_hits) == (1, 1)
        token = idp.sign()
        assert jwt.decode(token, found.key, algorithms=["RS256"], audience="gateway-api")["sub"] == "alice"
    finally:
        await keys.close()


async def test_random_kids_cause_at_most_one_fetch_per_interval(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """1000 tokens with made-up kids, all at once and then one by one, cost one key-set fetch per interval
    (REQ-B22); once the interval has passed, one more."""
    clock = Clock()
    keys = _keys(idp, http, clock)
    await keys.refresh()
    assert idp.jwks_hits == 1
    clock.now += 31
    found = await asyncio.gather(*(keys.key_or_refetch(secrets.token_urlsafe(8)) for _ in range(1000)))
    assert found == [None] * 1000
    for _ in range(1000):
        assert await keys.key_or_refetch(secrets.token_urlsafe(8)) is None
    assert idp.jwks_hits == 2
    clock.now += 31
    for _ in range(1000):
        assert await keys.key_or_refetch(secrets.token_urlsafe(8)) is None
    assert idp.jwks_hits == 3


async def test_a_rotated_key_works_after_one_refetch(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """The issuer rotates: the new kid is fetched on first sight (the interval since the last fetch has passed),
    the withdrawn key is gone, and concurrent callers share that one fetch."""
    clock = Clock()
    keys = _keys(idp, http, clock)
    await keys.refresh()
    old = idp.keys[0].kid
    new = idp.rotate("ES256").kid
    clock.now += 30
    found = await asyncio.gather(*(keys.key_or_refetch(new) for _ in range(50)))
    assert all(key is not None and key.algorithms == {"ES256"} for key in found)
    assert idp.jwks_hits == 2
    assert keys.key(old) is None


async def test_a_new_kid_within_the_interval_waits_for_the_next_one(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """Within the interval an unknown kid is refused without a fetch (and remembered as unknown); after it, the
    first caller fetches and finds the key."""
    clock = Clock()
    keys = _keys(idp, http, clock)
    await keys.refresh()
    added = idp.add_key("RS256").kid
    assert await keys.key_or_refetch(added) is None
    assert idp.jwks_hits == 1
    clock.now += 30
    assert await keys.key_or_refetch(added) is not None
    assert idp.jwks_hits == 2


async def test_issuer_down_keeps_the_last_good_keys(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """An outage (503, then a closed port) keeps the cached keys working and loosens nothing (REQ-B21)."""
    clock = Clock()
    keys = _keys(idp, http, clock)
    await keys.refresh()
    kid = idp.keys[0].kid
    idp.down = True
    clock.now += 30
    assert await keys.refresh() is False
    assert keys.key(kid) is not None
    clock.now += 30
    assert await keys.key_or_refetch("unknown") is None
    assert keys.key(kid) is not None
    assert idp.jwks_hits == 3


async def test_issuer_down_at_start_is_not_fatal(http: aiohttp.ClientSession) -> None:
    """An issuer unreachable at start: start() returns, no key is trusted, and a later fetch picks the keys up."""
    clock = Clock()
    async with running_issuer() as idp:
        idp.down = True
        keys = _keys(idp, http, clock, min_refetch_seconds=5)
        await keys.start()
        try:
            kid = idp.keys[0].kid
            assert keys.key(kid) is None
            idp.down = False
            assert await keys.key_or_refetch(kid) is None  # throttled: the failed start counts
            clock.now += 5
            assert await keys.key_or_refetch(kid) is not None
        finally:
            await keys.close()


async def test_a_slow_issuer_is_bounded_and_never_blocks_the_loop(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """A key set that takes 2 s: the fetch gives up at the timeout, and the event loop keeps running meanwhile
    (REQ-B22)."""
    keys = _keys(idp, http, Clock(), timeout=0.3)
    idp.delay = 2
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    assert await keys.refresh() is False
    elapsed = time.monotonic() - started
    ticker.cancel()
    assert elapsed < 2
    assert ticks >= 10


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """The request that started a refetch goes away: the fetch still lands for everyone else."""
    keys = _keys(idp, http, Clock())
    idp.delay = 0.2
    first = asyncio.create_task(keys.key_or_refetch(idp.keys[0].kid))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(keys.key_or_refetch(idp.keys[0].kid))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second is not None
    assert idp.jwks_hits == 1


async def test_a_configured_jwks_url_skips_discovery(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """With `jwks_url`, the key set is fetched directly and the discovery document never read."""
    keys = _keys(idp, http, Clock(), jwks_url=idp.jwks_url)
    await keys.refresh()
    assert keys.key(idp.keys[0].kid) is not None
    assert (idp.discovery_hits, keys.metadata) == (0, None)


def _rsa_jwk(kid: str, bits: int = 2048, **extra: object) -> dict[str, object]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**public_jwk(key, kid), **extra}


@pytest.mark.parametrize(
    ("jwk", "usable"),
    [
        pytest.param(lambda: _rsa_jwk("a"), {"RS256"}, id="rsa-for-configured-algs"),
        pytest.param(lambda: _rsa_jwk("a", alg="RS256"), {"RS256"}, id="rsa-own-alg"),
        pytest.param(lambda: _rsa_jwk("a", alg="RS512"), None, id="rsa-alg-not-configured"),
        pytest.param(lambda: _rsa_jwk("a", alg="ES256"), None, id="rsa-claiming-ec-alg"),
        pytest.param(lambda: _rsa_jwk("a", alg="HS256"), None, id="rsa-claiming-hmac"),
        pytest.param(lambda: _rsa_jwk("a", bits=1024), None, id="rsa-1024"),
        pytest.param(lambda: _rsa_jwk("a", use="enc"), None, id="encryption-key"),
        pytest.param(lambda: _rsa_jwk("a", key_ops=["encrypt"]), None, id="key-ops-without-verify"),
        pytest.param(lambda: _rsa_jwk("a", d="AAAA"), None, id="private-member"),
        pytest.param(lambda: {"kty": "oct", "kid": "a", "k": "c2VjcmV0"}, None, id="oct"),
        pytest.param(lambda: {"kty": "oct", "kid": "a", "alg": "HS256"}, None, id="oct-without-k"),
        pytest.param(lambda: {"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}, None, id="garbage"),
        pytest.param(lambda: {"kty": "EC", "kid": "a", "crv": "secp256k1", "x": "a", "y": "b"}, None, id="curve"),
    ],
)
def test_which_keys_are_imported(jwk: object, usable: set[str] | None) -> None:
    """Only asymmetric public signing keys, each for the configured algorithms its type (and its own `alg`)
    allows."""
    imported = import_key(jwk(), frozenset({"RS256", "ES256"}))  # type: ignore[operator]
    assert (imported.algorithms if imported else None) == usable


async def test_unusable_keys_in_a_set_are_skipped(idp: Issuer, http: aiohttp.ClientSession) -> None:
    """A set mixing an `oct` key with real ones imports only the real ones, and the `oct` kid stays unknown."""
    idp.extra = [{"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}]
    keys = _keys(idp, http, Clock())
    await keys.refresh()
    assert keys.kids == {idp.keys[0].kid}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://idp.example/keys", True),
        ("http://127.0.0.1:8080/keys", True),
        ("http://localhost/keys", True),
        ("http://[::1]/keys", True),
        ("http://idp.example/keys", False),
        ("ftp://idp.example/keys", False),
        ("https://user:pw@idp.example/keys", False),
        ("https://idp.example/keys#frag", False),
        ("/keys", False),
    ],
)
def test_only_https_or_loopback_urls(url: str, allowed: bool) -> None:
    """Keys come over https (plain http only from a loopback host)."""
    assert is_allowed_url(url) is allowed
