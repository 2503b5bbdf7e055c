"""Signing in and tokens: password login, the MFA step, refresh-token rotation, and re-authentication."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth.common import NO_STORE, PRINCIPAL, notify, token_response
from gateway.api.schemas import (
    AccessTokenResponse,
    LoginRequest,
    MfaChallengeResponse,
    MfaLoginRequest,
    ReauthRequest,
    RefreshRequest,
    TokenResponse,
)
from gateway.identity import accounts, lifecycle, sessions
from gateway.identity.passwords import PasswordHasher
from gateway.identity.sealing import Sealer
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import Principal, TokenService


class LoginController(Controller):
    path = "/auth"
    tags = ["sign-in"]

    @post("/login", status_code=200)
    async def login(
        self,
        data: JSONBody[LoginRequest],
        client: NamedDependency[sessions.Client],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenService],
        throttle: NamedDependency[LoginThrottle],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse | MfaChallengeResponse]:
        """Exchange email and password for an access JWT and a refresh token (a new session); for a user with
        a second factor, only a 5-minute MFA challenge for POST /auth/login/mfa."""
        pair = await accounts.login(
            db, hasher, tokens, throttle, email=data.email, password=data.password, client=client
        )
        if isinstance(pair, accounts.MfaRequired):
            challenge = MfaChallengeResponse(mfa_token=pair.mfa_token, expires_in=pair.expires_in)
            return Response(challenge, status_code=200, headers=NO_STORE)
        return token_response(pair)  # type: ignore[return-value]

    @post("/login/mfa", status_code=200)
    async def login_mfa(
        self,
        data: JSONBody[MfaLoginRequest],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenService],
        throttle: NamedDependency[LoginThrottle],
        sealer: NamedDependency[Sealer],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse]:
        """Finish an MFA login with a TOTP code (each accepted once) or a backup code (each usable once)."""
        pair, used_backup = await accounts.complete_mfa(
            db, hasher, tokens, throttle, sealer, challenge_token=data.mfa_token, code=data.code
        )
        if used_backup:
            await notify(db, pair.session_id, "A backup code was used", "A backup code was used to sign in.")
        return token_response(pair)

    @post("/refresh", status_code=200)
    async def refresh(
        self, data: JSONBody[RefreshRequest], tokens: NamedDependency[TokenService], db: NamedDependency[AsyncSession]
    ) -> Response[TokenResponse]:
        """Rotate a refresh token: the old one is spent; presenting it again ends the whole session."""
        return token_response(await sessions.refresh(db, tokens, token=data.refresh_token))

    @post("/reauth", status_code=200, dependencies=PRINCIPAL)
    async def reauth(
        self,
        data: JSONBody[ReauthRequest],
        principal: NamedDependency[Principal],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenService],
        db: NamedDependency[AsyncSession],
    ) -> Response[AccessTokenResponse]:
        """Prove the password again for sensitive changes: a new access token with a fresh `auth_time`."""
        token, ttl = await lifecycle.reauth(db, hasher, tokens, principal, password=data.password)
        return Response(AccessTokenResponse(access_token=token, expires_in=ttl), headers=NO_STORE)
