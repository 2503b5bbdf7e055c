"""/auth/invitations: what an invitation link offers, and its answer (accept or decline), by the link's holder."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth.common import NO_STORE
from gateway.api.deps import provide_principal
from gateway.api.schemas import Accepted, InvitationAccepted, InvitationAnswer, TokenRequest
from gateway.identity.passwords import PasswordHasher
from gateway.manage import invitations
from gateway.manage.invitations import InvitationDetails
from gateway.runtime import Services


class InvitationsController(Controller):
    path = "/auth/invitations"
    tags = ["account"]

    @post("/lookup", status_code=200)
    async def lookup(self, data: JSONBody[TokenRequest], db: NamedDependency[AsyncSession]) -> InvitationDetails:
        """The org, role and address of a pending invitation (for a page that asks "accept?"); 400 for a link
        that is unknown, answered, revoked or expired, all alike."""
        return await invitations.details(db, data.token)

    @post("/accept", status_code=200)
    async def accept(
        self,
        request: Request[object, object, State],
        data: JSONBody[InvitationAnswer],
        services: NamedDependency[Services],
        hasher: NamedDependency[PasswordHasher],
        db: NamedDependency[AsyncSession],
    ) -> Response[InvitationAccepted]:
        """Join the org with the invited role. With an access token, its user's address must be the invited
        one (403 otherwise). Without one, an address that has no account gets one with `password` (and `name`),
        verified by the link; an address that has an account must sign in first (403)."""
        user_id = None
        if request.headers.get("authorization") is not None:
            user_id = (await provide_principal(request, services)).user_id
        member, org = await invitations.accept(
            db, hasher, data.token, user_id=user_id, password=data.password, name=data.name
        )
        body = InvitationAccepted(org=org.slug, user_id=member.user_id, role=member.role)
        return Response(body, headers=NO_STORE)

    @post("/decline", status_code=200)
    async def decline(self, data: JSONBody[TokenRequest], db: NamedDependency[AsyncSession]) -> Accepted:
        """Refuse the invitation; its link stops working."""
        await invitations.decline(db, data.token)
        return Accepted(status="invitation declined")
