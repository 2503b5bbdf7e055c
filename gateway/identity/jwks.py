"""An outside issuer's public keys: OpenID discovery and a cached, throttled JWK Set per issuer.

Used by the resource server (outside access tokens, access/outside.py) and by the OpenID Connect relying party
(ID tokens). The API, all of it:

- `await discover(issuer, http)` -> `ProviderMetadata`: reads `{issuer}/.well-known/openid-configuration` and
  refuses a document whose `issuer` is not exactly the configured one (OIDC Discovery §4.3, RFC 8414 §3.3).
- `RemoteKeys(issuer=..., http=..., algorithms=..., jwks_url=None, min_refetch_seconds=30)`:
  - `await start()`: the first fetch (discovery first when no `jwks_url`). It never raises: an issuer that is
    down at start is logged and tried again later, so it cannot stop the gateway.
  - `key(kid)` -> `RemoteKey | None`: synchronous, in memory, never any I/O (the hot path); `may_refetch(kid)`
    says, as synchronously, whether `key_or_refetch` would fetch.
  - `await key_or_refetch(kid)`: the same, and on an unknown `kid` one single-flight refetch, at most once per
    `min_refetch_seconds` per issuer (OIDC Core §10.1.1, throttled as go-oidc#482: any caller can send a made-up
    `kid`). Kids still unknown after a refetch are remembered (a negative cache) until the next one is allowed.
    A caller waits for a fetch at most `timeout` seconds (≤ 5).
  - `metadata` (after discovery), `fetches` (attempts, for tests and metrics), `generation` (moves when a fetch
    brings a different set: re-verify what a cache holds), `await close()`.
  - A `RemoteKey` carries the public key and the algorithms it may verify: verify with
    `jwt.decode(token, rk.key, algorithms=[alg])` only when the token's `alg` is in `rk.algorithms`.

What is trusted (REQ-B21): a failed fetch (network, timeout, status, body, a set with no usable key) keeps the last
good keys; nothing is ever loosened. Only asymmetric public keys are imported (RSA ≥ 2048 bits, EC P-256/384/521,
OKP Ed25519/Ed448), each only for the configured algorithms its type allows (and only its own `alg` when the JWK
names one); `oct` keys, keys carrying private members, keys whose `use` is not `sig` or whose `key_ops` lack
`verify` are skipped. Fetches go through the process's aiohttp session without following redirects, with a
total timeout and a size cap, so they never block the event loop. Plain `http` is accepted only for loopback
hosts (tests, a sidecar); everywhere else the issuer and its key set must be `https`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.settings import ASYMMETRIC_ALGORITHMS, fetchable_url

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "ProviderMetadata",
    "PublicKey",
    "RemoteError",
    "RemoteKey",
    "RemoteKeys",
    "discover",
    "discovery_url",
    "fetch_json",
    "import_key",
    "import_key_set",
    "is_allowed_url",
]

log = logging.getLogger("gateway.jwks")

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

is_allowed_url = fetchable_url
"""An absolute `https` URL, or `http` to a loopback host; no credentials, no fragment."""
DEFAULT_MIN_REFETCH_SECONDS = 30.0
DEFAULT_REFRESH_SECONDS = 600.0
"""How often a key set is fetched again even when every kid is known (keys the issuer withdrew go away)."""
MAX_TIMEOUT_SECONDS = 5.0
MAX_BODY_BYTES = 256 * 1024
MAX_KEYS = 100
_NEGATIVE_MAX = 10_000
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_HEADERS = {"Accept": "application/json", "User-Agent": "casbin-gateway"}
"""Said explicitly: the process's session (proxy/forward.py) adds no header of its own, and some providers' edges
refuse a request without a User-Agent."""
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class RemoteError(Exception):
    """Discovery or a key-set fetch failed: the network, a timeout, the status, the body, or an issuer mismatch.
    The message is safe to log (no response body)."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of an OpenID Provider's discovery document the gateway uses."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    authorization_response_iss_parameter_supported: bool = False
    """RFC 9207: the provider sends `iss` on authorization responses; a missing one must then be refused."""
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RemoteKey:
    """One imported public key and the algorithms it may verify (a subset of the configured allow-list)."""

    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]
    material: str = ""
    """The JWK's public members, canonical JSON: two fetches hold the same key when these (and `algorithms`)
    are equal."""


def discovery_url(issuer: str) -> str:
    """OIDC Discovery §4: the issuer without a trailing `/`, then `/.well-known/openid-configuration`."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


async def fetch_json(http: aiohttp.ClientSession, url: str, *, timeout_seconds: float = MAX_TIMEOUT_SECONDS) -> Any:
    """GET a JSON document: 200 only, no redirects, at most MAX_BODY_BYTES, `timeout_seconds` in all (≤ 5)."""
    if not is_allowed_url(url):
        raise RemoteError(f"refusing to fetch {url!r}: https only (http only to a loopback host)")
    total = aiohttp.ClientTimeout(total=min(timeout_seconds, MAX_TIMEOUT_SECONDS))
    try:
        async with http.get(url, timeout=total, allow_redirects=False, headers=_HEADERS) as response:
            if response.status != 200:
                raise RemoteError(f"{url} answered {response.status}")
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("", "identity"):
                raise RemoteError(f"{url} sent a {encoding}-encoded body")
            body = await response.content.read(MAX_BODY_BYTES + 1)
    except TimeoutError as exc:
        raise RemoteError(f"{url} timed out") from exc
    except aiohttp.ClientError as exc:
        raise RemoteError(f"{url} unreachable: {type(exc).__name__}") from exc
    if len(body) > MAX_BODY_BYTES:
        raise RemoteError(f"{url} sent more than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise RemoteError(f"{url} sent no JSON") from exc


def _optional_url(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not is_allowed_url(value):
        raise RemoteError(f"discovery: {name} is not an allowed URL")
    return value


def _strings(document: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = document.get(name)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


async def discover(
    issuer: str, http: aiohttp.ClientSession, *, timeout_seconds: float = MAX_TIMEOUT_SECONDS
) -> ProviderMetadata:
    """The provider's metadata; RemoteError when it cannot be read or its `issuer` is not exactly `issuer`
    (no trailing-slash or case folding: the comparison tokens are checked with is the same string)."""
    document = await fetch_json(http, discovery_url(issuer), timeout_seconds=timeout_seconds)
    if not isinstance(document, dict):
        raise RemoteError("discovery: the document is not a JSON object")
    if document.get("issuer") != issuer:
        raise RemoteError(f"discovery: the document's issuer is not {issuer!r}")
    jwks_uri = _optional_url(document, "jwks_uri")
    if jwks_uri is None:
        raise RemoteError("discovery: no jwks_uri")
    supported = document.get("authorization_response_iss_parameter_supported", False)
    return ProviderMetadata(
        issuer=issuer,
        jwks_uri=jwks_uri,
        authorization_endpoint=_optional_url(document, "authorization_endpoint"),
        token_endpoint=_optional_url(document, "token_endpoint"),
        userinfo_endpoint=_optional_url(document, "userinfo_endpoint"),
        end_session_endpoint=_optional_url(document, "end_session_endpoint"),
        authorization_response_iss_parameter_supported=supported is True,
        id_token_signing_alg_values_supported=_strings(document, "id_token_signing_alg_values_supported"),
        code_challenge_methods_supported=_strings(document, "code_challenge_methods_supported"),
    )


def import_key(jwk: Mapping[str, Any], algorithms: frozenset[str]) -> RemoteKey | None:
    """One JWK as a verification key for some of `algorithms`, or None when it must not be used (see the module
    docstring for the rules)."""
    kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        return None
    if _PRIVATE_MEMBERS & jwk.keys():
        log.warning("jwks: ignoring key %r: it carries private members", kid)
        return None
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    usable: frozenset[str]
    try:
        if kty == "RSA":
            key: object = RSAAlgorithm.from_jwk(dict(jwk))
            usable = _RSA_ALGORITHMS
            if not isinstance(key, RSAPublicKey) or key.key_size < 2048:
                return None
        elif kty == "EC":
            curve = _EC_ALGORITHMS.get(str(jwk.get("crv")))
            if curve is None:
                return None
            key = ECAlgorithm.from_jwk(dict(jwk))
            usable = frozenset({curve})
            if not isinstance(key, EllipticCurvePublicKey):
                return None
        elif kty == "OKP":
            if jwk.get("crv") not in ("Ed25519", "Ed448"):
                return None
            key = OKPAlgorithm.from_jwk(dict(jwk))
            usable = frozenset({"EdDSA"})
            if not isinstance(key, Ed25519PublicKey | Ed448PublicKey):
                return None
        else:
            return None  # `oct` (a shared secret in a public document) and anything unknown
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # PyJWT and cryptography, for a malformed key
        log.warning("jwks: ignoring key %r: it does not parse", kid)
        return None
    usable = usable & algorithms
    if alg is not None:
        usable = usable & {alg} if isinstance(alg, str) else frozenset()
    if not usable:
        return None
    public = {name: jwk[name] for name in ("kty", "crv", "n", "e", "x", "y") if name in jwk}
    return RemoteKey(kid=kid, key=key, algorithms=usable, material=json.dumps(public, sort_keys=True))


def import_key_set(document: Any, algorithms: frozenset[str]) -> dict[str | None, RemoteKey]:
    """The usable keys of a JWK Set by kid (the first of duplicates wins); a key without a kid is kept under None
    only when it is the only usable key. RemoteError when the document is not a key set or nothing is usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise RemoteError("the JWK Set has no `keys` list")
    keys: dict[str | None, RemoteKey] = {}
    usable = 0
    for jwk in document["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict):
            continue
        imported = import_key(jwk, algorithms)
        if imported is None:
            continue
        usable += 1
        keys.setdefault(imported.kid, imported)
    if None in keys and usable > 1:
        del keys[None]
    if not keys:
        raise RemoteError("the JWK Set has no key usable with the configured algorithms")
    return keys


def _identities(keys: dict[str | None, RemoteKey]) -> dict[str | None, tuple[str, frozenset[str]]]:
    return {kid: (key.material, key.algorithms) for kid, key in keys.items()}


class RemoteKeys:
    """One issuer's key set, cached in memory; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        issuer: str,
        http: aiohttp.ClientSession,
        algorithms: Iterable[str],
        jwks_url: str | None = None,
        min_refetch_seconds: float = DEFAULT_MIN_REFETCH_SECONDS,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        timeout: float = MAX_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        allowed = frozenset(algorithms)
        if not allowed or not allowed <= ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(ASYMMETRIC_ALGORITHMS)}")
        self.issuer = issuer
        self.algorithms = allowed
        self._http = http
        self._jwks_url = jwks_url
        self._min_refetch = min_refetch_seconds
        self._refresh = refresh_seconds
        self._timeout = min(timeout, MAX_TIMEOUT_SECONDS)
        self._clock = clock
        self._keys: dict[str | None, RemoteKey] = {}
        self._unknown: dict[str | None, float] = {}
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.metadata: ProviderMetadata | None = None
        """The discovery document, once read (None with a configured `jwks_url`)."""
        self.fetches = 0
        """Fetch attempts so far (each is one discovery and/or one key-set request)."""
        self.generation = 0
        """Moves whenever a fetch brings a different set of keys (one added, withdrawn or replaced): whatever was
        verified with the previous set (a cache of verified tokens) should be verified again."""
        self.fetched_at: float | None = None
        """When the keys in use were fetched (the clock's time), or None before the first good fetch."""

    @property
    def kids(self) -> frozenset[str | None]:
        return frozenset(self._keys)

    async def start(self) -> None:
        """Fetch the keys once (never raises), then keep them fresh in the background until `close()`."""
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(), name=f"gateway-jwks-{self.issuer}")

    async def close(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None

    def key(self, kid: str | None) -> RemoteKey | None:
        """The key for `kid` from memory, or None. No I/O, ever."""
        return self._keys.get(kid)

    def may_refetch(self, kid: str | None) -> bool:
        """Whether `key_or_refetch(kid)` would fetch (or join a fetch under way) rather than answer None at once:
        the kid is not remembered as unknown, and the throttle allows a fetch. Synchronous; no I/O."""
        now = self._clock()
        until = self._unknown.get(kid)
        if until is not None and now < until:
            return False
        return self._inflight is not None or self._may_fetch(now)

    async def key_or_refetch(self, kid: str | None) -> RemoteKey | None:
        """The key for `kid`; when unknown, wait (≤ `timeout`) for one throttled, shared refetch and look again."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        now = self._clock()
        until = self._unknown.get(kid)
        if until is not None and now < until:
            return None
        if self._inflight is None and not self._may_fetch(now):
            return None
        await self.refresh()
        found = self._keys.get(kid)
        if found is None:
            if len(self._unknown) >= _NEGATIVE_MAX:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[kid] = (self._last_attempt or now) + self._min_refetch
        return found

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch under way (single flight); True when the keys were replaced. Never
        raises: a failure is logged and the previous keys stay."""
        if self._inflight is None:
            self._last_attempt = self._clock()
            self.fetches += 1
            self._inflight = asyncio.create_task(self._fetch(), name=f"gateway-jwks-fetch-{self.issuer}")
            self._inflight.add_done_callback(self._landed)
        # Shielded: a caller that gives up (its request was cancelled) does not cancel everyone's fetch.
        return await asyncio.shield(self._inflight)

    def _landed(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    def _may_fetch(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self._min_refetch

    async def _fetch(self) -> bool:
        try:
            url = self._jwks_url
            if url is None:
                if self.metadata is None:
                    self.metadata = await discover(self.issuer, self._http, timeout_seconds=self._timeout)
                url = self.metadata.jwks_uri
            document = await fetch_json(self._http, url, timeout_seconds=self._timeout)
            keys = import_key_set(document, self.algorithms)
        except RemoteError as exc:
            state = f"keeping {len(self._keys)} cached keys" if self._keys else "no keys yet"
            log.warning(
                "jwks: %s: %s (%s; next try in %.0fs at the earliest)", self.issuer, exc, state, self._min_refetch
            )
            return False
        except Exception:
            # Never let a surprise here reach the requests waiting on this fetch (they would get a 500).
            log.exception("jwks: %s: the fetch failed unexpectedly; keeping the cached keys", self.issuer)
            return False
        if _identities(keys) != _identities(self._keys):
            self.generation += 1
        self._keys = keys
        self._unknown = {}
        self.fetched_at = self._clock()
        return True

    async def _refresh_forever(self) -> None:
        while True:
            # Without keys (the issuer was down), try again as soon as the throttle allows.
            await asyncio.sleep(self._refresh if self._keys else max(self._min_refetch, 1.0))
            await self.refresh()
