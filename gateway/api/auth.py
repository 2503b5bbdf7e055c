"""/auth: log in, refresh, and who am I."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import accounts
from gateway.api.deps import provide_principal
from gateway.api.schemas import LoginRequest, MembershipView, MeResponse, RefreshRequest, TokenResponse
from gateway.db.models import Membership, Organization, User
from gateway.errors import InvalidToken
from gateway.identity.tokens import Principal
from gateway.runtime import Runtime

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def _tokens(pair: accounts.TokenPair) -> Response[TokenResponse]:
    body = TokenResponse(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)
    return Response(body, status_code=200, headers=NO_STORE)


class AuthController(Controller):
    path = "/auth"

    @post("/login", status_code=200)
    async def login(
        self,
        data: JSONBody[LoginRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse]:
        """Exchange email and password for an access JWT and a refresh token."""
        pair = await accounts.login(
            db,
            runtime.hasher,
            runtime.tokens,
            runtime.settings.tokens,
            email=data.email,
            password=data.password,
        )
        return _tokens(pair)

    @post("/refresh", status_code=200)
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse]:
        """Rotate a refresh token: the old one is spent; presenting it again revokes the whole family."""
        pair = await accounts.refresh(db, runtime.tokens, runtime.settings.tokens, token=data.refresh_token)
        return _tokens(pair)

    @get("/me", dependencies={"principal": Provide(provide_principal, sync_to_thread=False)})
    async def me(
        self,
        principal: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> Response[MeResponse]:
        """The current user and their memberships."""
        user = await db.get(User, principal.user_id)
        if user is None or user.disabled:
            raise InvalidToken("token rejected")
        rows = await db.execute(
            select(Organization.slug, Organization.name, Membership.role)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user.id)
            .order_by(Organization.slug)
        )
        body = MeResponse(
            id=user.id,
            email=user.email,
            created_at=user.created_at,
            memberships=[MembershipView(org=slug, name=name, role=role) for slug, name, role in rows],
            global_roles=list(runtime.policy.roles_of(principal.subject, "*")),
        )
        return Response(body, headers={"cache-control": "no-store"})
