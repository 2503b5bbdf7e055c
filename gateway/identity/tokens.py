"""Access JWTs (EdDSA, `typ: at+jwt`), opaque refresh tokens and the signing key ring.

This is the only module that knows algorithms and keys. Verification pins the algorithm, requires `iss`, `aud`,
`sub`, `exp`, `iat` and `jti`, checks `typ` (RFC 9068 §4) and only accepts `kid`s of the ring; `jku`, `x5u`,
`jwk` and `x5c` header members are never consulted. Verified tokens are cached by their exact bytes (same bytes,
same signature result) until they expire, so the proxy pays the signature check once per token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.engine import bump_version
from gateway.db.models import SigningKey, utcnow
from gateway.errors import CredentialExpired, InvalidToken, Unauthenticated
from gateway.policy.hot import KeyRecord  # at run time: Litestar resolves Principal's hints
from gateway.settings import Tokens

ALGORITHM = "EdDSA"
ACCESS_TYP = "at+jwt"
IDENTITY_TYP = "gw-identity+jwt"
SESSION_COOKIE_TYP = "gw-session+jwt"
"""A browser session cookie: never accepted as a bearer token, and a bearer token never as a cookie."""
IDENTITY_TTL = 60
_IDENTITY_REUSE = 30  # an identity token is re-signed once it has less than this many seconds left
LEEWAY_SECONDS = 5
REFRESH_PREFIX = "rt_"
_CACHE_MAX = 50_000
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(slots=True)  # made per request: frozen would cost an object.__setattr__ per field
class Principal:
    """The authenticated caller as the pipeline sees it."""

    user_id: str
    """Our user's id; for an outside caller with no linked user, its external subject (`ext:<issuer>:<sub>`), which
    is what the upstream (`X-Gateway-User`), the rate limits and the audit then see."""
    token_id: str
    key: KeyRecord | None = None
    """Set when the caller authenticated with an API key: its org and scopes apply."""
    session_id: str | None = None
    """The login an access token belongs to (`sid`); revoking that session stops the token at once."""
    auth_time: int = 0
    """When the user last proved a factor in that session (epoch seconds); 0 for API keys."""
    expires_at: float | None = None
    """When the credential stops being valid (epoch seconds): the token's `exp`, the key's expiry, or None."""
    issuer: str | None = None
    """The configured name of the trusted issuer of an outside access token (`[[trusted_issuers]]`); None for the
    gateway's own credentials."""
    org: str | None = None
    """The org an outside token is bound to (its issuer's `org_claim`): a request naming another is refused, as for
    an API key (whose org is `key.org`)."""
    subject: str = ""
    """The Casbin subject for this caller, made once: `user:<user_id>` (the default), or `ext:<issuer>:<sub>` for
    an outside caller with no linked user."""

    def __post_init__(self) -> None:
        if not self.subject:
            self.subject = "user:" + self.user_id

    @property
    def has_account(self) -> bool:
        """A user of ours (any credential of ours, or an outside token linked to a user), not an `ext:` subject."""
        return self.subject.startswith("user:")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """All known signing keys; the newest signs, every one verifies."""

    active_kid: str
    private_keys: dict[str, Ed25519PrivateKey]
    public_keys: dict[str, Ed25519PublicKey]


def _new_kid() -> str:
    return secrets.token_urlsafe(12)


def _load_ring(rows: list[SigningKey]) -> KeyRing:
    private = {row.kid: serialization.load_pem_private_key(row.private_key.encode(), password=None) for row in rows}
    keys = {kid: key for kid, key in private.items() if isinstance(key, Ed25519PrivateKey)}
    newest = max(rows, key=lambda row: row.created_at)
    return KeyRing(
        active_kid=newest.kid,
        private_keys=keys,
        public_keys={kid: key.public_key() for kid, key in keys.items()},
    )


async def load_or_create_keys(sessions: async_sessionmaker[AsyncSession]) -> KeyRing:
    """Load the signing keys, generating and storing the first one if there is none."""
    async with sessions() as session:
        rows = list((await session.scalars(select(SigningKey).where(SigningKey.algorithm == ALGORITHM))).all())
        if rows:
            return _load_ring(rows)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        session.add(SigningKey(kid=_new_kid(), algorithm=ALGORITHM, private_key=pem, created_at=utcnow()))
        await bump_version(session)
        await session.commit()
    # Re-read: a concurrent first start may have stored its own key too; both then verify.
    return await load_or_create_keys(sessions)


async def rotate_signing_key(sessions: async_sessionmaker[AsyncSession]) -> str:
    """Add a new signing key; it signs from the next reload on, and every older key still verifies (tokens
    already issued stay valid until they expire). Returns the new kid."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    kid = _new_kid()
    async with sessions() as session:
        session.add(SigningKey(kid=kid, algorithm=ALGORITHM, private_key=pem, created_at=utcnow()))
        await bump_version(session)
        await session.commit()
    return kid


async def prune_signing_keys(sessions: async_sessionmaker[AsyncSession], *, older_than_seconds: int) -> int:
    """Delete keys (never the newest) created longer ago than `older_than_seconds`; use at least the access
    token lifetime, or tokens they signed stop verifying early."""
    async with sessions() as session:
        rows = list(await session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))
        cutoff = utcnow().timestamp() - older_than_seconds
        doomed = [row for row in rows[1:] if row.created_at.timestamp() < cutoff]
        for row in doomed:
            await session.delete(row)
        if doomed:
            await bump_version(session)
        await session.commit()
    return len(doomed)


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("expected 'Authorization: Bearer <token>'")
    return token.strip()


class TokenService:
    """Issues and verifies access tokens with the current key ring."""

    def __init__(self, settings: Tokens, ring: KeyRing) -> None:
        self._settings = settings
        self._ring = ring
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._identities: dict[tuple[str, str, str, str, str], tuple[str, float]] = {}
        self._cookies: dict[str, tuple[Principal, int, int]] = {}

    @property
    def settings(self) -> Tokens:
        """Issuer, audience and the lifetimes of access tokens, sessions and refresh tokens."""
        return self._settings

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def replace_ring(self, ring: KeyRing) -> None:
        """Swap keys (after a rotation elsewhere); cached verifications made with old keys are dropped."""
        if ring.public_keys.keys() != self._ring.public_keys.keys():
            self._cache = {}
            self._identities = {}
            self._cookies = {}
        self._ring = ring

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public half of every key, as a JWK Set (RFC 7517): never a private member."""
        keys = []
        for kid, public in sorted(self._ring.public_keys.items()):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
            keys.append(
                {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"], "kid": kid, "alg": ALGORITHM, "use": "sig"}
            )
        return {"keys": keys}

    def identity_token(self, *, user_id: str, org: str, roles: str, audience: str, key_id: str | None = None) -> str:
        """A short-lived JWT an upstream can verify with the JWKS instead of trusting the network.

        Signed once and reused while it has more than half its life left, so the proxy pays the signature
        about once per caller, org and upstream per 30 seconds.
        """
        key = (user_id, org, roles, audience, key_id or "")
        now = time.time()
        cached = self._identities.get(key)
        if cached is not None and cached[1] - now > _IDENTITY_REUSE:
            return cached[0]
        issued = int(now)
        claims = {
            "iss": self._settings.issuer,
            "aud": audience,
            "sub": user_id,
            "org": org,
            "roles": roles.split(",") if roles else [],
            "iat": issued,
            "exp": issued + IDENTITY_TTL,
            "jti": secrets.token_urlsafe(12),
        }
        if key_id is not None:
            claims["key_id"] = key_id
        kid = self._ring.active_kid
        token = jwt.encode(
            claims, self._ring.private_keys[kid], algorithm=ALGORITHM, headers={"kid": kid, "typ": IDENTITY_TYP}
        )
        if len(self._identities) >= _CACHE_MAX:
            del self._identities[next(iter(self._identities))]
        self._identities[key] = (token, float(issued + IDENTITY_TTL))
        return token

    def issue_access_token(self, user_id: str, *, session_id: str, auth_time: int | None = None) -> tuple[str, int]:
        """Return (jwt, lifetime seconds) for `user_id` in the session (login) `session_id`."""
        now = int(time.time())
        ttl = self._settings.access_ttl_seconds
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "auth_time": auth_time if auth_time is not None else now,
            "sid": session_id,
        }
        kid = self._ring.active_kid
        token = jwt.encode(
            claims, self._ring.private_keys[kid], algorithm=ALGORITHM, headers={"kid": kid, "typ": ACCESS_TYP}
        )
        return token, ttl

    def issue_session_cookie(
        self, user_id: str, *, session_id: str, auth_time: int, idle_seconds: int, not_after: float
    ) -> tuple[str, int]:
        """Return (jwt, epoch expiry) for a browser session cookie: it expires after `idle_seconds` (re-issued
        while the browser is active, so the lifetime slides) and never after `not_after`, the session's end."""
        now = int(time.time())
        exp = min(now + idle_seconds, int(not_after))
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user_id,
            "iat": now,
            "exp": exp,
            "jti": secrets.token_urlsafe(12),
            "auth_time": auth_time,
            "sid": session_id,
            "nat": int(not_after),
        }
        kid = self._ring.active_kid
        token = jwt.encode(
            claims, self._ring.private_keys[kid], algorithm=ALGORITHM, headers={"kid": kid, "typ": SESSION_COOKIE_TYP}
        )
        return token, exp

    def verify_session_cookie(self, token: str) -> tuple[Principal, int, int]:
        """Verify a session cookie's value: (principal, issued at, session end). Raises InvalidToken."""
        cached = self._cookies.get(token)
        now = time.time()
        if cached is not None:
            if now < (cached[0].expires_at or 0) + LEEWAY_SECONDS:
                return cached
            del self._cookies[token]
            raise CredentialExpired("session expired")
        claims = self._decode(token, SESSION_COOKIE_TYP, ("exp", "iat", "sub", "jti", "iss", "aud", "sid", "nat"))
        principal = self._principal(claims)
        issued, not_after = claims["iat"], claims["nat"]
        if not isinstance(issued, int) or not isinstance(not_after, int):
            raise InvalidToken("token rejected")
        if len(self._cookies) >= _CACHE_MAX:
            del self._cookies[next(iter(self._cookies))]
        self._cookies[token] = (principal, issued, not_after)
        return principal, issued, not_after

    def genuine_session_cookie(self, token: str) -> tuple[Principal, int, int]:
        """A session cookie this gateway signed, even one past its idle expiry: (principal, issued at, session
        end). Only for the portal, which then asks the database whether the session itself is still live
        (a forward-auth browser's cookie cannot be re-issued on the way, so it may idle out while in use)."""
        claims = self._decode(
            token, SESSION_COOKIE_TYP, ("exp", "iat", "sub", "jti", "iss", "aud", "sid", "nat"), verify_exp=False
        )
        principal = self._principal(claims)
        issued, not_after = claims["iat"], claims["nat"]
        if not isinstance(issued, int) or not isinstance(not_after, int):
            raise InvalidToken("token rejected")
        return principal, issued, not_after

    def authenticate(self, authorization: str | None) -> Principal:
        """Turn an Authorization header value into a Principal or raise Unauthenticated / InvalidToken."""
        token = _bearer(authorization)
        if token is None:
            raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
        return self.verify(token)

    def knows(self, token: str) -> bool:
        """True when `token` is one of ours verified earlier (and cached): one dict lookup, no verification."""
        return token in self._cache

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        now = time.time()
        if cached is not None:
            principal, expires = cached
            if now < expires + LEEWAY_SECONDS:
                return principal
            del self._cache[token]
            raise InvalidToken("token expired")
        principal, expires = self._verify_uncached(token)
        if len(self._cache) >= _CACHE_MAX:
            # Evict the oldest entry (dicts keep insertion order); bounded memory under token floods.
            del self._cache[next(iter(self._cache))]
        self._cache[token] = (principal, expires)
        return principal

    def _verify_uncached(self, token: str) -> tuple[Principal, float]:
        claims = self._decode(token, ACCESS_TYP, ("exp", "iat", "sub", "jti", "iss", "aud", "sid"))
        principal = self._principal(claims)
        return principal, float(claims["exp"])

    def _decode(self, token: str, typ: str, required: tuple[str, ...], *, verify_exp: bool = True) -> dict[str, Any]:
        # Only the canonical compact form: three unpadded base64url parts. Decoders that tolerate padding or
        # other characters would let one token take many spellings (each a fresh cache entry, and a way past
        # any filter that compares tokens as strings).
        if not _COMPACT_RE.fullmatch(token):
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("typ") != typ or header.get("alg") != ALGORITHM:
            raise InvalidToken("not an access token" if typ == ACCESS_TYP else "not a session cookie")
        kid = header.get("kid")
        key = self._ring.public_keys.get(kid) if isinstance(kid, str) and _KID_RE.match(kid) else None
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(required), "verify_exp": verify_exp},
            )
        except jwt.ExpiredSignatureError as exc:
            raise CredentialExpired("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        return claims

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        sub, jti, exp, sid = claims["sub"], claims["jti"], claims["exp"], claims["sid"]
        auth_time = claims.get("auth_time", 0)
        if not all(isinstance(value, str) and value for value in (sub, jti, sid)) or not isinstance(exp, int):
            raise InvalidToken("token rejected")
        if not isinstance(auth_time, int):
            raise InvalidToken("token rejected")
        return Principal(user_id=sub, token_id=jti, session_id=sid, auth_time=auth_time, expires_at=float(exp))


def new_refresh_token() -> tuple[str, str]:
    """Return (token for the client, SHA-256 hex to store). 256 bits from the CSPRNG."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def secret_digest(secret: str) -> str:
    """SHA-256 hex of a random secret (refresh, reset, challenge and bootstrap tokens). A fast hash is right
    for these: they carry 256 random bits, nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_refresh_token(token: str) -> str:
    return secret_digest(token)
