"""/admin/orgs/{org}/roles: the system roles, and custom roles with permissions and inheritance."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, IfMatch, Limit, etag, if_match
from gateway.api.admin.guard import Caller
from gateway.manage import roles
from gateway.manage.common import find_org
from gateway.manage.roles import Permission


def _permissions(body: list[schemas.PermissionBody]) -> list[Permission]:
    return [Permission(p.path, tuple(p.methods), p.effect) for p in body]


class RolesController(Controller):
    path = "/orgs/{org:str}/roles"
    tags = ["roles"]

    @get("/")
    async def list_roles(
        self, org: FromPath[str], db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.RolePage:
        """System roles first, then custom roles by name."""
        page = await roles.list_roles(db, await find_org(db, org), cursor=cursor, limit=limit)
        return schemas.RolePage(page.items, page.next_cursor)

    @post("/")
    async def create(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.RoleCreate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.RoleView]:
        """A custom role: permissions on proxied paths (allow or deny) and roles it inherits."""
        view = await roles.create_role(
            db,
            caller.actor,
            await find_org(db, org),
            name=data.name,
            description=data.description,
            permissions=_permissions(data.permissions),
            inherits=data.inherits,
        )
        return Response(view, status_code=201, headers=etag(view.version))

    @get("/{role:str}")
    async def read(
        self, org: FromPath[str], role: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[schemas.RoleView]:
        view = await roles.get_role(db, await find_org(db, org), role)
        return Response(view, headers=etag(view.version))

    @put("/{role:str}")
    async def replace(
        self,
        org: FromPath[str],
        role: FromPath[str],
        data: JSONBody[schemas.RoleReplace],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        match: IfMatch = None,
    ) -> Response[schemas.RoleView]:
        """Replace description, permissions and parents at once. With If-Match, a stale version gets 412."""
        view = await roles.replace_role(
            db,
            caller.actor,
            await find_org(db, org),
            role,
            description=data.description,
            permissions=_permissions(data.permissions),
            inherits=data.inherits,
            if_match=if_match(match),
        )
        return Response(view, headers=etag(view.version))

    @delete("/{role:str}")
    async def remove(
        self,
        org: FromPath[str],
        role: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        move_to: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> None:
        """Refused (409) while members hold it, unless `?move_to=<role>` gives them another; or while a role
        inherits it."""
        await roles.delete_role(db, caller.actor, await find_org(db, org), role, move_to=move_to)
