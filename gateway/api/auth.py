"""/auth: log in, refresh, who am I, and the caller's sessions (list, log out one or all)."""

from __future__ import annotations

import logging
from typing import Any, cast

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.peer import resolve_peer
from gateway.api.deps import provide_principal
from gateway.api.schemas import (
    Accepted,
    AccessTokenResponse,
    BackupCodes,
    BootstrapRequest,
    BootstrapResult,
    ChangePasswordRequest,
    CodeRequest,
    EmailChangeRequest,
    ForgotPasswordRequest,
    LoginRequest,
    LogoutResult,
    MembershipView,
    MeResponse,
    MfaChallengeResponse,
    MfaLoginRequest,
    MfaRemoveRequest,
    PasswordChanged,
    ProfileUpdate,
    ReauthRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    SessionView,
    TokenRequest,
    TokenResponse,
    TotpEnrolment,
)
from gateway.db.models import Membership, Organization, Session, TotpFactor, User
from gateway.errors import Conflict, Forbidden, InvalidToken, Unprocessable
from gateway.identity import accounts, lifecycle, mail, mfa, sessions
from gateway.identity.tokens import Principal
from gateway.runtime import Runtime

log = logging.getLogger("gateway.auth")
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
PRINCIPAL = {"principal": Provide(provide_principal, sync_to_thread=False)}
ACCEPTED = Accepted(status="accepted: if the address can receive it, an email is on its way")


def _tokens(pair: sessions.TokenPair) -> Response[TokenResponse]:
    body = TokenResponse(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)
    return Response(body, status_code=200, headers=NO_STORE)


def client_of(request: Request[Any, Any, Any], runtime: Runtime) -> sessions.Client:
    """The caller's address (through trusted proxies only) and user agent, for the session list."""
    raw = cast(list[tuple[bytes, bytes]], request.scope["headers"])
    host = request.client.host if request.client else ""
    peer = resolve_peer(host, request.scope.get("scheme", "http"), raw, runtime.pipeline.trusted_proxies)
    return sessions.Client(ip=peer.client_ip, user_agent=request.headers.get("user-agent", ""))


async def _human(db: AsyncSession, principal: Principal) -> User:
    user = await db.get(User, principal.user_id)
    if user is None or user.disabled or user.kind != "human":
        raise InvalidToken("token rejected")
    return user


async def _notify(db: AsyncSession, session_id: str | None, subject: str, text: str) -> None:
    """Tell the user, out of band, that their sign-in factors changed or were used."""
    row = await db.get(Session, session_id) if session_id else None
    user = await db.get(User, row.user_id) if row else None
    if user is not None and user.email:
        mail.enqueue(db, to=user.email, subject=subject, body=f"{text} If this was not you, reset your password.\n")


async def _send_reset(runtime: Runtime, email: str) -> None:
    try:
        async with runtime.sessions() as db:
            await lifecycle.forgot_password(db, runtime.settings.mail, email=email)
            await db.commit()
        runtime.mailer.kick()
    except Exception:
        log.exception("preparing a password reset failed")


def _session_id(principal: Principal) -> str:
    if principal.session_id is None:
        raise InvalidToken("an access token from a login is needed")
    return principal.session_id


class AuthController(Controller):
    path = "/auth"

    @post("/login", status_code=200)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse | MfaChallengeResponse]:
        """Exchange email and password for an access JWT and a refresh token (a new session); for a user with
        a second factor, only a 5-minute MFA challenge for POST /auth/login/mfa."""
        pair = await accounts.login(
            db,
            runtime.hasher,
            runtime.tokens,
            runtime.settings.tokens,
            email=data.email,
            password=data.password,
            client=client_of(request, runtime),
            throttle=runtime.throttle,
        )
        if isinstance(pair, accounts.MfaRequired):
            challenge = MfaChallengeResponse(mfa_token=pair.mfa_token, expires_in=pair.expires_in)
            return Response(challenge, status_code=200, headers=NO_STORE)
        return _tokens(pair)  # type: ignore[return-value]

    @post("/login/mfa", status_code=200)
    async def login_mfa(
        self, data: JSONBody[MfaLoginRequest], runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]
    ) -> Response[TokenResponse]:
        """Finish an MFA login with a TOTP code (each accepted once) or a backup code (each usable once)."""
        pair, used_backup = await accounts.complete_mfa(
            db,
            runtime.hasher,
            runtime.tokens,
            runtime.settings.tokens,
            runtime.sealer,
            challenge_token=data.mfa_token,
            code=data.code,
            throttle=runtime.throttle,
        )
        if used_backup:
            await _notify(db, pair.session_id, "A backup code was used", "A backup code was used to sign in.")
        return _tokens(pair)

    # -- second factors -----------------------------------------------------------------------------------

    @post("/mfa/totp", status_code=200, dependencies=PRINCIPAL)
    async def enrol_totp(
        self,
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[TotpEnrolment]:
        """Start TOTP enrolment (needs a recent sign-in): the secret and its otpauth:// URI, shown only now.
        Nothing changes for sign-in until POST /auth/mfa/totp/confirm."""
        lifecycle.require_recent(principal)
        user = await _human(db, principal)
        secret, uri = await mfa.enrol(db, runtime.sealer, user)
        return Response(TotpEnrolment(secret=secret, otpauth_uri=uri), headers=NO_STORE)

    @post("/mfa/totp/confirm", status_code=200, dependencies=PRINCIPAL)
    async def confirm_totp(
        self,
        data: JSONBody[CodeRequest],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[BackupCodes]:
        """Activate TOTP with a current code; returns ten backup codes, shown once."""
        lifecycle.require_recent(principal)
        user = await _human(db, principal)
        codes = await mfa.confirm(db, runtime.hasher, runtime.sealer, user, data.code)
        if codes is None:
            raise Unprocessable("code: not a current code for this secret")
        await _notify(db, principal.session_id, "Two-step sign-in is on", "An authenticator app was added.")
        return Response(BackupCodes(backup_codes=codes), headers=NO_STORE)

    @delete("/mfa/totp", status_code=204, dependencies=PRINCIPAL)
    async def remove_totp(
        self,
        data: JSONBody[MfaRemoveRequest],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Turn TOTP off: needs the password and a current factor (TOTP or backup code); the user is told."""
        user = await _human(db, principal)
        valid, _ = await runtime.hasher.verify(data.password, user.password_hash)
        factor_ok = valid and (
            await mfa.verify_totp(db, runtime.sealer, user.id, data.code)
            or await mfa.use_backup_code(db, runtime.hasher, user.id, data.code)
        )
        if not factor_ok:
            raise Forbidden("password and a current code are needed to turn two-step sign-in off")
        await mfa.remove(db, user.id)
        await _notify(db, principal.session_id, "Two-step sign-in is off", "Your authenticator app was removed.")

    @post("/mfa/backup-codes", status_code=200, dependencies=PRINCIPAL)
    async def regenerate_backup_codes(
        self,
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[BackupCodes]:
        """Ten new backup codes (needs a recent sign-in and active TOTP); the old ones stop working."""
        lifecycle.require_recent(principal)
        user = await _human(db, principal)
        if await mfa.confirmed_factor(db, user.id) is None:
            raise Conflict("totp: turn on two-step sign-in first")
        codes = await mfa.regenerate_backup_codes(db, runtime.hasher, user)
        await _notify(
            db, principal.session_id, "New backup codes", "New backup codes were made; the old ones are void."
        )
        return Response(BackupCodes(backup_codes=codes), headers=NO_STORE)

    @post("/refresh", status_code=200)
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse]:
        """Rotate a refresh token: the old one is spent; presenting it again ends the whole session."""
        pair = await sessions.refresh(db, runtime.tokens, runtime.settings.tokens, token=data.refresh_token)
        return _tokens(pair)

    @post("/logout", status_code=200, dependencies=PRINCIPAL)
    async def logout(self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]) -> LogoutResult:
        """End this session: its access token and refresh tokens stop working at once."""
        await sessions.revoke(db, principal.user_id, _session_id(principal))
        return LogoutResult(sessions_ended=1)

    @post("/logout-all", status_code=200, dependencies=PRINCIPAL)
    async def logout_all(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> LogoutResult:
        """End every session of the caller, this one included."""
        return LogoutResult(sessions_ended=await sessions.revoke_all(db, principal.user_id))

    @get("/sessions", dependencies=PRINCIPAL)
    async def list_sessions(
        self,
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[list[SessionView]]:
        """The caller's live sessions: created, last used, IP, user agent; `current` marks this one."""
        rows = await sessions.active(db, principal.user_id, runtime.settings.tokens)
        views = [
            SessionView(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                ip=row.ip,
                user_agent=row.user_agent,
                current=row.id == principal.session_id,
            )
            for row in rows
        ]
        return Response(views, headers={"cache-control": "no-store"})

    @delete("/sessions/{session:str}", dependencies=PRINCIPAL)
    async def revoke_session(
        self, session: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> None:
        """End one of the caller's sessions (another user's session id is 404)."""
        await sessions.revoke(db, principal.user_id, session)

    # -- the account lifecycle ----------------------------------------------------------------------------

    @post("/bootstrap", status_code=201)
    async def bootstrap(
        self, data: JSONBody[BootstrapRequest], runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]
    ) -> BootstrapResult:
        """Create the first superadmin with a one-time token from `gateway bootstrap-token` (valid one hour,
        refused once any superadmin exists). There is no default account."""
        user = await accounts.bootstrap(db, runtime.hasher, token=data.token, email=data.email, password=data.password)
        return BootstrapResult(id=user.id, email=user.email or "")

    @post("/register", status_code=202)
    async def register(
        self, data: JSONBody[RegisterRequest], runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]
    ) -> Accepted:
        """Sign up: 202 whether or not the email has an account (its owner gets an email instead)."""
        await lifecycle.register(db, runtime.hasher, runtime.settings.mail, email=data.email, password=data.password)
        return ACCEPTED

    @post("/verify-email", status_code=200)
    async def verify_email(
        self, data: JSONBody[TokenRequest], runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]
    ) -> Accepted:
        """Follow a verification or email-change link (single use)."""
        await lifecycle.verify_email(db, runtime.settings.mail, token=data.token)
        return Accepted(status="email confirmed")

    @post("/forgot-password", status_code=202)
    async def forgot_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ForgotPasswordRequest],
        runtime: NamedDependency[Runtime],
    ) -> Response[Accepted]:
        """202 for known and unknown emails alike, sent before any lookup: the work (a reset link for a known
        address, at most five an hour) happens after the response, so its timing reveals nothing either."""
        await runtime.throttle.check_ip(client_of(request, runtime).ip)
        return Response(ACCEPTED, status_code=202, background=BackgroundTask(_send_reset, runtime, data.email))

    @post("/reset-password", status_code=200)
    async def reset_password(
        self, data: JSONBody[ResetPasswordRequest], runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]
    ) -> Response[Accepted]:
        """Set a new password from a reset link. Every session ends; nobody is signed in by this. The link proved
        the mailbox, so the account's login failures and lock are forgotten (the client IP's are not)."""
        email = await lifecycle.reset_password(db, runtime.hasher, token=data.token, password=data.password)
        await runtime.throttle.reset(email)
        return Response(Accepted(status="password changed; sign in"), headers=NO_STORE)

    @post("/change-password", status_code=200, dependencies=PRINCIPAL)
    async def change_password(
        self,
        data: JSONBody[ChangePasswordRequest],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> PasswordChanged:
        """Needs the current password and a recent sign-in; every other session ends."""
        ended = await lifecycle.change_password(
            db, runtime.hasher, principal, current=data.current_password, new=data.new_password
        )
        return PasswordChanged(other_sessions_ended=ended)

    @post("/change-email", status_code=202, dependencies=PRINCIPAL)
    async def change_email(
        self,
        data: JSONBody[EmailChangeRequest],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Accepted:
        """The new address must confirm (link by email); until then nothing changes. Needs a recent sign-in."""
        await lifecycle.request_email_change(db, runtime.settings.mail, principal, new_email=data.email)
        return ACCEPTED

    @post("/reauth", status_code=200, dependencies=PRINCIPAL)
    async def reauth(
        self,
        data: JSONBody[ReauthRequest],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[AccessTokenResponse]:
        """Prove the password again for sensitive changes: a new access token with a fresh `auth_time`."""
        token, ttl = await lifecycle.reauth(
            db, runtime.hasher, runtime.tokens, runtime.settings.tokens, principal, password=data.password
        )
        return Response(AccessTokenResponse(access_token=token, expires_in=ttl), headers=NO_STORE)

    @patch("/me", dependencies=PRINCIPAL)
    async def update_me(
        self,
        data: JSONBody[ProfileUpdate],
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[MeResponse]:
        """Profile fields only (`name`); any other field is refused (422), privileged ones included."""
        await lifecycle.update_profile(db, principal, name=data.name)
        return await self._me(principal, runtime, db)

    @get("/me", dependencies=PRINCIPAL)
    async def me(
        self,
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[MeResponse]:
        """The current user and their memberships."""
        return await self._me(principal, runtime, db)

    @staticmethod
    async def _me(principal: Principal, runtime: Runtime, db: AsyncSession) -> Response[MeResponse]:
        user = await db.get(User, principal.user_id)
        if user is None or user.disabled:
            raise InvalidToken("token rejected")
        totp = await db.get(TotpFactor, user.id)
        rows = await db.execute(
            select(Organization.slug, Organization.name, Membership.role)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user.id, Organization.archived_at.is_(None))
            .order_by(Organization.slug)
        )
        body = MeResponse(
            id=user.id,
            email=user.email,
            name=user.name,
            email_verified=user.email_verified_at is not None,
            mfa=totp is not None and totp.confirmed_at is not None,
            created_at=user.created_at,
            memberships=[MembershipView(org=slug, name=name, role=role) for slug, name, role in rows],
            global_roles=list(runtime.state.roles_of(principal.subject, "*")),
        )
        return Response(body, headers={"cache-control": "no-store"})
