"""/admin/users: the platform's user list, and disabling or enabling an account (platform-wide permission)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.api.admin.guard import Caller
from gateway.db.models import User
from gateway.manage import users
from gateway.manage.members import find_user


def _view(user: User) -> schemas.UserView:
    return schemas.UserView(user.id, user.email, user.name, user.kind, user.disabled, user.created_at)


class UsersController(Controller):
    path = "/users"
    tags = ["users"]
    opt = {"authz": "platform"}

    @get("/")
    async def list_users(
        self,
        db: NamedDependency[AsyncSession],
        email: Annotated[str | None, QueryParameter(max_length=320)] = None,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.UserPage:
        """Every user (service accounts too), ordered by id; `?email=` finds one."""
        page = await users.list_users(db, email=email, cursor=cursor, limit=limit)
        return schemas.UserPage([_view(u) for u in page.items], page.next_cursor)

    @post("/{user:str}/disable", status_code=200)
    async def disable(
        self, user: FromPath[str], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.UserView:
        """At once on this gateway (within a poll on the others): no grant, membership or API key works, and
        every refresh token is revoked."""
        found = await find_user(db, user_id=user)
        return _view(await users.set_disabled(db, caller.actor, found, disabled=True))

    @post("/{user:str}/enable", status_code=200)
    async def enable(
        self, user: FromPath[str], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.UserView:
        found = await find_user(db, user_id=user)
        return _view(await users.set_disabled(db, caller.actor, found, disabled=False))
