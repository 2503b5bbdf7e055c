"""/admin/orgs/{org}/policies (an org's own lines) and /admin/policies (global lines, platform-wide)."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit, LineId
from gateway.api.admin.guard import Caller
from gateway.db.models import Organization
from gateway.manage import policies
from gateway.manage.common import Page, find_org


def _page(page: Page[policies.LineView]) -> schemas.LinePage:
    return schemas.LinePage(page.items, page.next_cursor)


async def _add(
    db: AsyncSession, caller: Caller, org: Organization | None, lines: list[str | list[str]]
) -> list[schemas.LineView]:
    stored = await policies.add_lines(db, caller.actor, org, lines)
    return list(stored)


class PoliciesController(Controller):
    path = "/orgs/{org:str}/policies"
    tags = ["policies"]

    @get("/")
    async def list_lines(
        self, org: FromPath[str], db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.LinePage:
        """Lines in this org's domain (memberships are listed under /members, not here)."""
        return _page(await policies.list_lines(db, await find_org(db, org), cursor=cursor, limit=limit))

    @post("/")
    async def add(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.LinesAdd],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> list[schemas.LineView]:
        """Add Casbin lines (`p, role, <org>, /path, METHOD[, allow|deny]` or `g, role, parent, <org>`); all or
        none. They must name this org, proxied paths, and roles or members of this org."""
        return await _add(db, caller, await find_org(db, org), data.lines)

    @delete("/{line:int}")
    async def remove(
        self,
        org: FromPath[str],
        line: LineId,
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> None:
        await policies.remove_line(db, caller.actor, await find_org(db, org), line)


class GlobalPoliciesController(Controller):
    path = "/policies"
    tags = ["policies"]
    opt = {"authz": "platform"}

    @get("/")
    async def list_lines(
        self, db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.LinePage:
        """Every stored line, from files and from the API."""
        return _page(await policies.list_lines(db, None, cursor=cursor, limit=limit))

    @post("/")
    async def add(
        self, data: JSONBody[schemas.LinesAdd], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> list[schemas.LineView]:
        """Global lines may name any org or `*`, and management objects (`admin:/...`)."""
        return await _add(db, caller, None, data.lines)

    @delete("/{line:int}")
    async def remove(self, line: LineId, caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]) -> None:
        await policies.remove_line(db, caller.actor, None, line)
