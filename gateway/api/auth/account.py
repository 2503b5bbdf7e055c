"""The account's lifecycle: the first superadmin, sign-up and email verification, password reset and change,
email change, and the profile."""

from __future__ import annotations

import logging

from litestar import Controller, Response, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.return_url import portal_origin
from gateway.api.auth.common import ACCEPTED, NO_STORE, PRINCIPAL
from gateway.api.schemas import (
    Accepted,
    BootstrapRequest,
    BootstrapResult,
    ChangePasswordRequest,
    EmailChangeRequest,
    ForgotPasswordRequest,
    MembershipView,
    MeResponse,
    PasswordChanged,
    ProfileUpdate,
    RegisterRequest,
    ResetPasswordRequest,
    TokenRequest,
)
from gateway.db.models import Membership, Organization, TotpFactor, User
from gateway.errors import InvalidToken
from gateway.identity import accounts, lifecycle
from gateway.identity.passwords import PasswordHasher
from gateway.identity.sessions import Client
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import Principal
from gateway.policy import HotState
from gateway.runtime import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.auth")


async def send_reset(services: Services, email: str) -> None:
    """Prepare a reset email (run after the response: its timing must not tell whether the address is known).
    With the portal on, the link opens the portal's reset page."""
    settings = services.settings
    portal = portal_origin(settings) if settings.browser.enabled else None
    try:
        async with services.sessions() as db:
            await lifecycle.forgot_password(db, settings.mail, email=email, portal=portal)
            await db.commit()
        services.mailer.kick()
    except Exception:
        log.exception("preparing a password reset failed")


class AccountController(Controller):
    path = "/auth"
    tags = ["account"]

    @post("/bootstrap", status_code=201)
    async def bootstrap(
        self,
        data: JSONBody[BootstrapRequest],
        hasher: NamedDependency[PasswordHasher],
        db: NamedDependency[AsyncSession],
    ) -> BootstrapResult:
        """Create the first superadmin with a one-time token from `gateway bootstrap-token` (valid one hour,
        refused once any superadmin exists). There is no default account."""
        user = await accounts.bootstrap(db, hasher, token=data.token, email=data.email, password=data.password)
        return BootstrapResult(id=user.id, email=user.email or "")

    @post("/register", status_code=202)
    async def register(
        self,
        data: JSONBody[RegisterRequest],
        hasher: NamedDependency[PasswordHasher],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
    ) -> Accepted:
        """Sign up: 202 whether or not the email has an account (its owner gets an email instead)."""
        await lifecycle.register(db, hasher, settings.mail, email=data.email, password=data.password)
        return ACCEPTED

    @post("/verify-email", status_code=200)
    async def verify_email(
        self, data: JSONBody[TokenRequest], settings: NamedDependency[Settings], db: NamedDependency[AsyncSession]
    ) -> Accepted:
        """Follow a verification or email-change link (single use)."""
        await lifecycle.verify_email(db, settings.mail, token=data.token)
        return Accepted(status="email confirmed")

    @post("/forgot-password", status_code=202)
    async def forgot_password(
        self,
        data: JSONBody[ForgotPasswordRequest],
        client: NamedDependency[Client],
        throttle: NamedDependency[LoginThrottle],
        services: NamedDependency[Services],
    ) -> Response[Accepted]:
        """202 for known and unknown emails alike, sent before any lookup: the work (a reset link for a known
        address, at most five an hour) happens after the response, so its timing reveals nothing either."""
        await throttle.check_ip(client.ip)
        return Response(ACCEPTED, status_code=202, background=BackgroundTask(send_reset, services, data.email))

    @post("/reset-password", status_code=200)
    async def reset_password(
        self,
        data: JSONBody[ResetPasswordRequest],
        hasher: NamedDependency[PasswordHasher],
        throttle: NamedDependency[LoginThrottle],
        db: NamedDependency[AsyncSession],
    ) -> Response[Accepted]:
        """Set a new password from a reset link. Every session ends; nobody is signed in by this. The link proved
        the mailbox, so the account's login failures and lock are forgotten (the client IP's are not)."""
        email = await lifecycle.reset_password(db, hasher, token=data.token, password=data.password)
        await throttle.reset(email)
        return Response(Accepted(status="password changed; sign in"), headers=NO_STORE)

    @post("/change-password", status_code=200, dependencies=PRINCIPAL)
    async def change_password(
        self,
        data: JSONBody[ChangePasswordRequest],
        principal: NamedDependency[Principal],
        hasher: NamedDependency[PasswordHasher],
        db: NamedDependency[AsyncSession],
    ) -> PasswordChanged:
        """Needs the current password and a recent sign-in; every other session ends."""
        ended = await lifecycle.change_password(
            db, hasher, principal, current=data.current_password, new=data.new_password
        )
        return PasswordChanged(other_sessions_ended=ended)

    @post("/change-email", status_code=202, dependencies=PRINCIPAL)
    async def change_email(
        self,
        data: JSONBody[EmailChangeRequest],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
    ) -> Accepted:
        """The new address must confirm (link by email); until then nothing changes. Needs a recent sign-in."""
        await lifecycle.request_email_change(db, settings.mail, principal, new_email=data.email)
        return ACCEPTED

    @patch("/me", dependencies=PRINCIPAL)
    async def update_me(
        self,
        data: JSONBody[ProfileUpdate],
        principal: NamedDependency[Principal],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> Response[MeResponse]:
        """Profile fields only (`name`); any other field is refused (422), privileged ones included."""
        await lifecycle.update_profile(db, principal, name=data.name)
        return await _me(principal, hot, db)

    @get("/me", dependencies=PRINCIPAL)
    async def me(
        self, principal: NamedDependency[Principal], hot: NamedDependency[HotState], db: NamedDependency[AsyncSession]
    ) -> Response[MeResponse]:
        """The current user and their memberships."""
        return await _me(principal, hot, db)


async def _me(principal: Principal, hot: HotState, db: AsyncSession) -> Response[MeResponse]:
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
        global_roles=list(hot.roles_of(principal.subject, "*")),
    )
    return Response(body, headers={"cache-control": "no-store"})
