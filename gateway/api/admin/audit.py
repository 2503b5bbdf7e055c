"""/admin/orgs/{org}/audit and /admin/audit: the trail of configuration changes, newest first."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.manage import audit
from gateway.manage.common import find_org
from gateway.runtime import Services


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


NDJSON = "application/x-ndjson"


def _export(services: Services, chosen: audit.AuditFilter) -> Stream:
    return Stream(
        audit.export_events(services.sessions, chosen), media_type=NDJSON, headers={"cache-control": "no-store"}
    )


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

    @get("/export", media_type=NDJSON)
    async def export(
        self,
        org: FromPath[str],
        db: NamedDependency[AsyncSession],
        services: NamedDependency[Services],
        actor: ActorFilter = None,
        action: ActionFilter = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
    ) -> Stream:
        """The same events as NDJSON (one JSON object a line), oldest first, streamed: for archives and SIEMs."""
        found = await find_org(db, org)
        return _export(services, audit.AuditFilter(found.slug, actor, action, since, until))


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

    @get("/export", media_type=NDJSON)
    async def export(
        self,
        services: NamedDependency[Services],
        actor: ActorFilter = None,
        action: ActionFilter = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
    ) -> Stream:
        """Every change, every org, as NDJSON, oldest first, streamed."""
        return _export(services, audit.AuditFilter(None, actor, action, since, until))
