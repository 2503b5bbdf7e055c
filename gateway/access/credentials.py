"""Authenticating a credential (stage 2, and the control plane): an access JWT or an API key, or 401.

An access token whose session was revoked (logout, password change, disabled account) is refused from the
in-memory snapshot.

API keys come as `X-API-Key: <key>` or `Authorization: Bearer <key>`; their checksum is verified before any
lookup, the lookup is in the in-memory snapshot (no database), and the stored hash is compared in constant time.
A key with an allow-list (`allowed_ips`) used from any other client address (as `trusted_proxies` let us see
it: access/peer.py) is refused exactly as an unknown key is, so a stolen key tried elsewhere is not confirmed
valid; only the audit line says why.

Access tokens of trusted outside issuers (identity/outside.py) are accepted as bearer tokens too. The caller is
then the user linked to the token's subject under the issuer's `link_provider` (refused while that user is
disabled: the snapshot knows at once), else the outside subject `ext:<issuer>:<sub>`. Links and disabled users come
from the snapshot, so the principal made for a cached token is reused until the snapshot's version moves.
"""

from __future__ import annotations

import hmac
import time

from gateway.errors import BadRequest, InvalidToken
from gateway.identity import apikeys
from gateway.identity.outside import OutsideClaims, OutsideTokens, SigningKeyUnknown
from gateway.identity.tokens import Principal, TokenService
from gateway.policy import HotState

KEY_REJECTED = "API key rejected"
REFUSED_FROM_ADDRESS = "API key refused: the client address is not in its allowed_ips"


def authenticate(
    tokens: TokenService,
    authorization: str | None,
    *,
    api_key: str | None = None,
    state: HotState,
    client_ip: str,
    outside: OutsideTokens | None = None,
) -> Principal:
    """Missing credentials -> Unauthenticated; a rejected token or key -> InvalidToken (both 401). `client_ip` is
    the caller's address through trusted proxies (access/peer.py), which a key's allow-list is checked against.
    With `outside`, tokens of trusted issuers are accepted too; one whose signing key may arrive with a refetch
    raises SigningKeyUnknown (an InvalidToken): see `authenticate_waiting`."""
    bearer = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    if bearer is not None and apikeys.looks_like_key(bearer):
        if api_key is not None:
            raise BadRequest("send an API key in X-API-Key or in Authorization, not both")
        api_key = bearer
    if api_key is not None:
        return _by_key(state, api_key, client_ip)
    # A well-formed bearer token goes straight to verification; anything else gets the service's own answer
    # (401 without credentials, 401 invalid_token for another scheme or an empty token).
    if bearer and outside is not None and not tokens.knows(bearer):
        claims = outside.verify(bearer)
        if claims is not None:
            return outside_principal(claims, state)
    principal = tokens.verify(bearer) if bearer else tokens.authenticate(authorization)
    # Logout, revoked sessions, password changes and disabled accounts: the snapshot lists the sessions
    # revoked within the last hour, so this check never touches the database.
    if principal.session_id is not None and state.session_revoked(principal.session_id):
        raise InvalidToken("token revoked")
    return principal


def _by_key(state: HotState, key: str, client_ip: str) -> Principal:
    key_id = apikeys.parse(key)
    record = state.api_key(key_id)
    digest = apikeys.key_hash(key)
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        raise InvalidToken(KEY_REJECTED)
    # Before the expiry check: from outside its list, an expired key is not told apart from a made-up one. No
    # allow-list (the usual case) costs one comparison.
    allowed = record.allowed
    if allowed is not None and client_ip not in allowed:
        raise InvalidToken(KEY_REJECTED, audit_reason=REFUSED_FROM_ADDRESS)
    if record.expires_at is not None and time.time() >= record.expires_at:
        raise InvalidToken("API key expired")
    return Principal(user_id=record.user_id, token_id=key_id, key=record, expires_at=record.expires_at)


async def authenticate_waiting(
    tokens: TokenService,
    authorization: str | None,
    *,
    api_key: str | None = None,
    state: HotState,
    client_ip: str,
    outside: OutsideTokens | None = None,
) -> Principal:
    """`authenticate`, waiting (at most the fetch timeout, 5 s) for the one throttled key-set refetch an outside
    token with an unknown `kid` may need, then deciding once more."""
    try:
        return authenticate(tokens, authorization, api_key=api_key, state=state, client_ip=client_ip, outside=outside)
    except SigningKeyUnknown as unknown:
        await unknown.refetch()
    return authenticate(tokens, authorization, api_key=api_key, state=state, client_ip=client_ip, outside=outside)


def outside_principal(claims: OutsideClaims, state: HotState) -> Principal:
    """The caller an outside token stands for in this snapshot: its linked user (refused while disabled), else its
    `ext:` subject."""
    version = state.version
    principal = claims.principal
    if principal is not None and claims.version == version:
        return principal
    trusted = claims.trusted
    linked = state.linked_user(trusted.link_provider, claims.subject) if trusted.link_provider is not None else None
    if linked is not None:
        if state.user_disabled(linked):
            raise InvalidToken("token rejected", audit_reason="outside token of a disabled user")
        principal = Principal(
            user_id=linked,
            token_id=claims.token_id,
            expires_at=claims.expires_at,
            issuer=trusted.name,
            org=claims.org,
        )
    else:
        principal = Principal(
            user_id=claims.external,
            token_id=claims.token_id,
            expires_at=claims.expires_at,
            issuer=trusted.name,
            org=claims.org,
            subject=claims.external,
        )
    claims.principal, claims.version = principal, version
    return principal
