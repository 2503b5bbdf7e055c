"""/admin/orgs/{org}/members: list, add, read, change role, remove."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, IfMatch, Limit, etag, if_match
from gateway.api.admin.guard import Caller
from gateway.manage import members
from gateway.manage.common import find_org

Search = Annotated[
    str | None, QueryParameter(description="part of an email or name (any case)", min_length=1, max_length=320)
]
RoleFilter = Annotated[str | None, QueryParameter(description="members holding this role", max_length=64)]


class MembersController(Controller):
    path = "/orgs/{org:str}/members"
    tags = ["members"]

    @get("/")
    async def list_members(
        self,
        org: FromPath[str],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
        search: Search = None,
        role: RoleFilter = None,
    ) -> schemas.MemberPage:
        """Members (people and service accounts), ordered by user id; `search` keeps those whose email or name
        contains it, `role` those holding that role. Only this org's members are ever looked at."""
        found = await find_org(db, org)
        page = await members.list_members(db, found, cursor=cursor, limit=limit, search=search, role=role)
        return schemas.MemberPage(page.items, page.next_cursor)

    @post("/")
    async def add(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.MemberAdd],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.MemberView:
        """Add an existing user (by email or user_id) with a role; granting owner takes an owner."""
        found = await find_org(db, org)
        return await members.add_member(db, caller.actor, found, role=data.role, email=data.email, user_id=data.user_id)

    @get("/{member:str}")
    async def read(
        self, org: FromPath[str], member: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[schemas.MemberView]:
        """One member, by user id or email (here and in PATCH and DELETE); anyone else is 404. The ETag goes
        back in If-Match on PATCH and DELETE (412 when the membership changed since)."""
        view = await members.get_member(db, await find_org(db, org), member)
        return Response(view, headers=etag(members.member_version(view)))

    @patch("/{member:str}")
    async def change_role(
        self,
        org: FromPath[str],
        member: FromPath[str],
        data: JSONBody[schemas.MemberUpdate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        match: IfMatch = None,
    ) -> Response[schemas.MemberView]:
        """Takes effect on the next request, proxied or admin. The last owner cannot be demoted (409)."""
        found = await find_org(db, org)
        view = await members.change_role(db, caller.actor, found, member, data.role, if_match=if_match(match))
        return Response(view, headers=etag(members.member_version(view)))

    @delete("/{member:str}")
    async def remove(
        self,
        org: FromPath[str],
        member: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        match: IfMatch = None,
    ) -> None:
        """Remove a member and revoke their API keys in this org. The last owner cannot be removed (409)."""
        found = await find_org(db, org)
        await members.remove_member(db, caller.actor, found, member, if_match=if_match(match))
