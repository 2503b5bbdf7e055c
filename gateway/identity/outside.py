"""Access tokens of trusted outside issuers (`[[trusted_issuers]]`): which bearer tokens are theirs, and verifying them.

A bearer token is an outside token when its (unverified) `iss` is exactly a configured issuer's; it is then
verified with that issuer's keys only (identity/jwks.py), never falling back to the gateway's own keys, and the
gateway's tokens never to theirs. Verification follows RFC 8725 (REQ-B20): the algorithm is pinned to the token's
`alg` only when the issuer's allow-list and the key both allow it (no `none`, no HMAC), `iss` must match exactly,
`aud` must contain a configured audience, `exp` is required, `nbf` and `iat` are checked, all with the issuer's
leeway. The header members `jwk`, `jku`, `x5u` and `x5c` are never consulted (a key a token brings with it proves
nothing) and a token with `crit` is refused (no extension is understood).

Verified tokens are cached by their exact bytes until they expire, like TokenService: the signature is checked
once per token. When a fetch brings the issuer's keys changed, cached tokens are verified again, so one signed with
a key the issuer withdrew stops then.

The request path does no I/O, with one exception: a token whose `kid` the issuer's key set does not hold, when a
refetch is allowed (at most one per `min_refetch_seconds` per issuer, shared by every request), raises
`SigningKeyUnknown`; the async callers wait for that one refetch (bounded by its 5 s timeout) and try once more, so
a key the issuer just rotated in works on its first request instead of being refused until a later one. Every
other unknown kid is refused at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from gateway.errors import InvalidToken
from gateway.identity.jwks import MAX_TIMEOUT_SECONDS, RemoteKeys
from gateway.identity.tokens import Principal
from gateway.settings import TrustedIssuer

log = logging.getLogger("gateway.outside")

_CACHE_MAX = 50_000
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SUBJECT_RE = re.compile(r"[\x21-\x7e]{1,255}")
"""Printable ASCII without spaces: the subject goes into policy lines, audit lines and the upstream's headers."""
_ORG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class SigningKeyUnknown(InvalidToken):
    """An outside token names a `kid` its issuer's cached key set lacks, and one refetch may find it. Async callers
    `await refetch()` and authenticate once more; anywhere else it is the 401 it inherits."""

    def __init__(self, keys: RemoteKeys, kid: str | None) -> None:
        super().__init__("unknown signing key")
        self.keys = keys
        self.kid = kid

    async def refetch(self) -> None:
        """Wait for the issuer's one shared refetch (or the one under way); never raises for a failed fetch."""
        await self.keys.key_or_refetch(self.kid)


@dataclass(slots=True)  # kept per token; `principal` is filled in per snapshot version by access/credentials.py
class OutsideClaims:
    """What a verified outside token says, cached by its bytes until `expires_at`."""

    trusted: TrustedIssuer
    subject: str
    """The value of the issuer's `subject_claim`."""
    external: str
    """`ext:<issuer name>:<subject>`, the Casbin subject when no user is linked."""
    org: str | None
    """The value of the issuer's `org_claim`, when one is configured."""
    token_id: str
    expires_at: float
    keys: RemoteKeys
    generation: int
    """The key set's generation the signature was checked with: when the issuer's set changes (a key withdrawn),
    the token is verified again."""
    principal: Principal | None = None
    version: int = -1
    """The snapshot version `principal` was made for (links and disabled users may change with it)."""


@dataclass(slots=True)
class _Issuer:
    trusted: TrustedIssuer
    keys: RemoteKeys
    algorithms: frozenset[str]
    audiences: list[str]
    required: list[str]


def _unverified_issuer(token: str) -> object:
    """The `iss` of a compact JWS without verifying it (only to pick the issuer whose keys must verify it)."""
    payload = token.split(".", 2)[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims.get("iss") if isinstance(claims, dict) else None


class OutsideTokens:
    """The trusted issuers, their key sets and the verified-token cache; built once per process."""

    def __init__(self, issuers: Iterable[TrustedIssuer], http: aiohttp.ClientSession) -> None:
        self._issuers: dict[str, _Issuer] = {}
        for trusted in issuers:
            required = ["exp", "iss", "aud", *trusted.subject_claim.split(":")]
            if trusted.org_claim is not None:
                required.append(trusted.org_claim)
            keys = RemoteKeys(
                issuer=trusted.issuer,
                http=http,
                algorithms=trusted.algorithms,
                jwks_url=trusted.jwks_url,
                min_refetch_seconds=trusted.min_refetch_seconds,
            )
            self._issuers[trusted.issuer] = _Issuer(
                trusted, keys, frozenset(trusted.algorithms), list(trusted.audiences), required
            )
        self._cache: dict[str, OutsideClaims] = {}
        self._starting: list[asyncio.Task[None]] = []

    @property
    def key_sets(self) -> dict[str, RemoteKeys]:
        """Each trusted issuer's keys, by its configured name."""
        return {issuer.trusted.name: issuer.keys for issuer in self._issuers.values()}

    async def start(self, *, wait_seconds: float = MAX_TIMEOUT_SECONDS) -> None:
        """Fetch every issuer's keys at once, waiting at most `wait_seconds` in all: an issuer that is down or slow
        does not hold up the start (its fetch goes on, or is tried again later) and never stops it."""
        self._starting = [
            asyncio.create_task(issuer.keys.start(), name=f"gateway-jwks-start-{issuer.trusted.name}")
            for issuer in self._issuers.values()
        ]
        if self._starting:
            await asyncio.wait(self._starting, timeout=wait_seconds)
        for issuer in self._issuers.values():
            if not issuer.keys.kids:
                log.warning(
                    "trusted issuer %s: no keys yet; its tokens are refused until a fetch succeeds", issuer.trusted.name
                )

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        for issuer in self._issuers.values():
            await issuer.keys.close()

    def verify(self, token: str) -> OutsideClaims | None:
        """The claims of a valid outside token; None when `token` is not a trusted issuer's (it may be the
        gateway's own). Raises InvalidToken when it is one of theirs but fails (SigningKeyUnknown: see above)."""
        cached = self._cache.get(token)
        if cached is not None:
            if cached.generation == cached.keys.generation:
                if time.time() < cached.expires_at + cached.trusted.leeway_seconds:
                    return cached
                del self._cache[token]
                raise InvalidToken("token expired")
            del self._cache[token]  # the issuer's keys changed since: verify again (a withdrawn key stops here)
        if not _COMPACT_RE.fullmatch(token):
            return None
        named = _unverified_issuer(token)
        issuer = self._issuers.get(named) if isinstance(named, str) else None
        if issuer is None:
            return None
        claims = self._verify(token, issuer)
        if len(self._cache) >= _CACHE_MAX:
            del self._cache[next(iter(self._cache))]  # the oldest: bounded memory under a flood of tokens
        self._cache[token] = claims
        return claims

    def _verify(self, token: str, issuer: _Issuer) -> OutsideClaims:
        trusted = issuer.trusted
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if "crit" in header:
            raise InvalidToken("token rejected", audit_reason="outside token: a `crit` header is not understood")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise InvalidToken("token rejected", audit_reason=f"outside token: alg {str(alg)[:16]!r} not allowed")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token")
        key = issuer.keys.key(kid)
        if key is None:
            if issuer.keys.may_refetch(kid):
                raise SigningKeyUnknown(issuer.keys, kid)
            raise InvalidToken("unknown signing key")
        if alg not in key.algorithms:
            raise InvalidToken("token rejected", audit_reason=f"outside token: key {str(kid)[:64]!r} is not for {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=issuer.audiences,
                issuer=trusted.issuer,
                leeway=trusted.leeway_seconds,
                options={"require": issuer.required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected", audit_reason=f"outside token: {type(exc).__name__}") from exc
        return _claims(trusted, claims, issuer.keys)


def _claims(trusted: TrustedIssuer, claims: dict[str, Any], keys: RemoteKeys) -> OutsideClaims:
    # PyJWT compared `iss`; compare again, exactly, as the one fact everything else rests on.
    if claims.get("iss") != trusted.issuer:
        raise InvalidToken("token rejected")
    # `tid:oid` (Entra's stable key for a person, as its sign-in links them): the claims' values joined by ':'.
    parts = [claims.get(name) for name in trusted.subject_claim.split(":")]
    present = [part for part in parts if isinstance(part, str) and part]
    subject = ":".join(present)
    exp, jti = claims.get("exp"), claims.get("jti")
    if len(present) != len(parts) or not _SUBJECT_RE.fullmatch(subject):
        raise InvalidToken("token rejected", audit_reason=f"outside token: unusable {trusted.subject_claim}")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("token rejected")
    org: str | None = None
    if trusted.org_claim is not None:
        value = claims.get(trusted.org_claim)
        if not isinstance(value, str) or not _ORG_RE.fullmatch(value):
            raise InvalidToken("token rejected", audit_reason=f"outside token: unusable {trusted.org_claim}")
        org = value
    return OutsideClaims(
        trusted=trusted,
        subject=subject,
        external=f"ext:{trusted.name}:{subject}",
        org=org,
        token_id=jti if isinstance(jti, str) else "",
        expires_at=float(exp),
        keys=keys,
        generation=keys.generation,
    )
