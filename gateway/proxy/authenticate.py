"""Stage 2, authenticate: the access JWT from `Authorization: Bearer` becomes a Principal, or 401."""

from __future__ import annotations

from gateway.identity.tokens import Principal, TokenService


def authenticate(tokens: TokenService, authorization: str | None) -> Principal:
    """Missing credentials -> Unauthenticated; a rejected token -> InvalidToken (both 401)."""
    return tokens.authenticate(authorization)
