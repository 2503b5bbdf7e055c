"""/admin/orgs/{org}/policies (an org's own lines, and a preview of a change to them), /admin/orgs/{org}/policy-versions
(their numbered versions: list, compare, roll back) and /admin/policies (global lines, platform-wide)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit, LineId, VersionNumber
from gateway.api.admin.guard import Caller
from gateway.db.models import Organization
from gateway.errors import Unprocessable
from gateway.manage import policies, preview, versions
from gateway.manage.common import Page, find_org
from gateway.policy import HotState

Against = Annotated[int | None, QueryParameter(ge=1, le=2**31 - 1, description="the version to compare with")]


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

    @post("/preview", status_code=200)
    async def preview_change(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.LinesPreview],
        caller: NamedDependency[Caller],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.Preview:
        """A dry run of adding `add` and removing the lines `remove` (ids): the lines that would change and the
        decisions that would change for the org's recent requests (as this process saw them). The same checks
        as the real change apply; nothing is stored."""
        found = await find_org(db, org)

        async def change() -> None:
            if data.add:
                await policies.add_lines(db, caller.actor, found, data.add)
            for line in data.remove:
                await policies.remove_line(db, caller.actor, found, line)

        if not data.add and not data.remove:
            raise Unprocessable("add: give lines to add or line ids to remove")
        return await preview.preview(db, hot, found, change)

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


class VersionsController(Controller):
    path = "/orgs/{org:str}/policy-versions"
    tags = ["policies"]

    @get("/")
    async def list_versions(
        self, org: FromPath[str], db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.VersionPage:
        """Every version of the org's own lines (its `p` lines and role `g` lines, not memberships), newest
        first: each change to them (API, roles, policy files, rollback) is the next number."""
        page = await versions.list_versions(db, await find_org(db, org), cursor=cursor, limit=limit)
        return schemas.VersionPage(page.items, page.next_cursor)

    @get("/{version:int}")
    async def read(
        self, org: FromPath[str], version: VersionNumber, db: NamedDependency[AsyncSession]
    ) -> schemas.VersionDetail:
        """One version with its whole set of lines."""
        return await versions.detail(db, await find_org(db, org), version)

    @get("/{version:int}/diff")
    async def diff(
        self,
        org: FromPath[str],
        version: VersionNumber,
        db: NamedDependency[AsyncSession],
        against: Against = None,
    ) -> schemas.VersionDiff:
        """Lines added and removed from `against` (default: the version before) to this one."""
        return await versions.diff(db, await find_org(db, org), version, against)

    @post("/{version:int}/rollback", status_code=200)
    async def rollback(
        self,
        org: FromPath[str],
        version: VersionNumber,
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.VersionDiff:
        """Make the org's lines those of this version again, as a new version (the answer: its number and what
        it changed). Lines from the policy files are not removed (409): change the files instead."""
        return await policies.rollback(db, caller.actor, await find_org(db, org), version)

    @post("/{version:int}/preview", status_code=200)
    async def preview_rollback(
        self,
        org: FromPath[str],
        version: VersionNumber,
        caller: NamedDependency[Caller],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.Preview:
        """What a rollback to this version would change (lines, and decisions for the org's recent requests),
        without changing anything."""
        found = await find_org(db, org)
        return await preview.preview(db, hot, found, lambda: policies.rollback(db, caller.actor, found, version))
