"""/admin/orgs/{org}/audit and /admin/audit: the trail of configuration changes, newest first, and its NDJSON
exports, oldest first."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.manage import audit
from gateway.manage.common import find_org
from gateway.runtime import Services

ActorFilter = Annotated[str | None, QueryParameter(max_length=200, description="e.g. user:<id> or cli:<name>")]
ActionFilter = Annotated[str | None, QueryParameter(max_length=64, description="e.g. member.role")]
NDJSON = "application/x-ndjson"


def provide_filter(
    actor: ActorFilter = None,
    action: ActionFilter = None,
    since: FromQuery[dt.datetime | None] = None,
    until: FromQuery[dt.datetime | None] = None,
) -> audit.AuditFilter:
    """`?actor=&action=&since=&until=`, shared by the lists and the exports (the org comes from the path)."""
    return audit.AuditFilter(None, actor, action, since, until)


FILTER = {"chosen": Provide(provide_filter, sync_to_thread=False)}


async def _page(db: AsyncSession, chosen: audit.AuditFilter, cursor: str | None, limit: int) -> schemas.AuditPage:
    page = await audit.list_events(db, chosen, cursor=cursor, limit=limit)
    return schemas.AuditPage(page.items, page.next_cursor)


def _export(services: Services, chosen: audit.AuditFilter) -> Stream:
    stream = audit.export_events(services.sessions, chosen)
    return Stream(stream, media_type=NDJSON, headers={"cache-control": "no-store"})


class AuditController(Controller):
    path = "/orgs/{org:str}/audit"
    tags = ["audit"]
    dependencies = FILTER

    @get("/")
    async def list_events(
        self,
        org: FromPath[str],
        chosen: NamedDependency[audit.AuditFilter],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.AuditPage:
        """This org's changes: who, what, before and after, request id. Filter by actor, action, time."""
        found = await find_org(db, org)
        return await _page(db, replace(chosen, org=found.slug), cursor, limit)

    @get("/export", media_type=NDJSON)
    async def export(
        self,
        org: FromPath[str],
        chosen: NamedDependency[audit.AuditFilter],
        db: NamedDependency[AsyncSession],
        services: NamedDependency[Services],
    ) -> Stream:
        """The same events as NDJSON (one JSON object a line), oldest first, streamed: for archives and SIEMs."""
        found = await find_org(db, org)
        return _export(services, replace(chosen, org=found.slug))


class GlobalAuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    opt = {"authz": "platform"}
    dependencies = FILTER

    @get("/")
    async def list_events(
        self,
        chosen: NamedDependency[audit.AuditFilter],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.AuditPage:
        """Every change, every org."""
        return await _page(db, chosen, cursor, limit)

    @get("/export", media_type=NDJSON)
    async def export(self, chosen: NamedDependency[audit.AuditFilter], services: NamedDependency[Services]) -> Stream:
        """Every change, every org, as NDJSON, oldest first, streamed."""
        return _export(services, chosen)
