"""/admin/orgs/{org}/audit and /admin/audit: the trail of configuration changes, newest first."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.manage import audit
from gateway.manage.common import find_org


async def _list(
    db: AsyncSession,
    org: str | None,
    actor: str | None,
    action: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    cursor: str | None,
    limit: int,
) -> schemas.AuditPage:
    page = await audit.list_events(
        db, org=org, actor=actor, action=action, since=since, until=until, cursor=cursor, limit=limit
    )
    return schemas.AuditPage(page.items, page.next_cursor)


ActorFilter = Annotated[str | None, QueryParameter(max_length=200, description="e.g. user:<id> or cli:<name>")]
ActionFilter = Annotated[str | None, QueryParameter(max_length=64, description="e.g. member.role")]


class AuditController(Controller):
    path = "/orgs/{org:str}/audit"
    tags = ["audit"]

    @get("/")
    async def list_events(
        self,
        org: FromPath[str],
        db: NamedDependency[AsyncSession],
        actor: ActorFilter = None,
        action: ActionFilter = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.AuditPage:
        """This org's changes: who, what, before and after, request id. Filter by actor, action, time."""
        found = await find_org(db, org)
        return await _list(db, found.slug, actor, action, since, until, cursor, limit)


class GlobalAuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    opt = {"authz": "platform"}

    @get("/")
    async def list_events(
        self,
        db: NamedDependency[AsyncSession],
        actor: ActorFilter = None,
        action: ActionFilter = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.AuditPage:
        """Every change, every org."""
        return await _list(db, None, actor, action, since, until, cursor, limit)
