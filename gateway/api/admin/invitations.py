"""/admin/orgs/{org}/invitations: invite an email address with a role, list the invitations, revoke one."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.api.admin.guard import Caller
from gateway.manage import invitations
from gateway.manage.common import find_org
from gateway.settings import Settings

Status = Annotated[
    str,
    QueryParameter(description="pending (default), accepted, declined, revoked, expired or all", max_length=16),
]


class InvitationsController(Controller):
    path = "/orgs/{org:str}/invitations"
    tags = ["members"]

    @get("/")
    async def list_invitations(
        self,
        org: FromPath[str],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
        status: Status = "pending",
    ) -> schemas.InvitationPage:
        """The org's invitations (pending ones unless `status` says otherwise), by id."""
        found = await find_org(db, org)
        page = await invitations.list_invitations(
            db, found, status=None if status == "all" else status, cursor=cursor, limit=limit
        )
        return schemas.InvitationPage(page.items, page.next_cursor)

    @post("/")
    async def invite(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.InvitationCreate],
        caller: NamedDependency[Caller],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
    ) -> schemas.InvitationView:
        """Invite `email` with `role`; a link that works once goes to that address (through the outbox), and a
        pending invitation of the same address is replaced. An owner role takes an owner, as for members."""
        found = await find_org(db, org)
        return await invitations.invite(
            db, caller.actor, found, settings.mail, email=data.email, role=data.role, days=data.expires_in_days
        )

    @delete("/{invitation:str}")
    async def revoke(
        self,
        org: FromPath[str],
        invitation: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """The link stops working at once; an answered or expired invitation is 404."""
        await invitations.revoke(db, caller.actor, await find_org(db, org), invitation)
