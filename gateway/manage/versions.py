"""Numbered versions of an org's own lines: every change to them (API lines, custom roles, policy files, a
rollback) writes the whole set as the next version, in the change's own transaction, so any two versions
compare and any one can be restored.

An org's own lines are its `p` lines and its roles' `g` lines (`g, role, parent, <org>`), from the API and from
the policy files; memberships (`g, user:<id>, ...`) are people, not policy, and are not versioned. The first
change an org sees also writes its lines as they were before (version 1, action `baseline`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Organization, PolicyRule, PolicyVersion, utcnow
from gateway.errors import NotFound
from gateway.manage.common import Actor, Page, fetch_page, lock_org
from gateway.policy.rules import ANY_DOMAIN, Rule

Line = tuple[str, ...]
"""`(origin, ptype, v0, v1, ...)`: where the line comes from (`api` or `file`) and its values."""


@dataclass(frozen=True, slots=True)
class VersionView:
    number: int
    created_at: dt.datetime
    actor: str
    action: str
    line_count: int


@dataclass(frozen=True, slots=True)
class VersionLine:
    line: str
    origin: str


@dataclass(frozen=True, slots=True)
class VersionDetail:
    number: int
    created_at: dt.datetime
    actor: str
    action: str
    lines: list[VersionLine]


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """From version `base` to version `number`: lines added and removed (text as the API shows lines)."""

    base: int | None
    number: int
    added: list[str]
    removed: list[str]


def of_org(slug: str) -> ColumnElement[bool]:
    """The stored lines that are an org's own (see the module docstring)."""
    return or_(
        (PolicyRule.ptype == "p") & (PolicyRule.v1 == slug),
        (PolicyRule.ptype == "g") & (PolicyRule.v2 == slug) & ~PolicyRule.v0.startswith("user:"),
    )


def text(line: Line) -> str:
    """`p, viewer, acme, /x, GET, allow` (without the origin)."""
    return ", ".join(line[1:])


def values_of(row: PolicyRule) -> Line:
    """`(ptype, v0, ...)` of a stored line, without its unused columns."""
    columns = (row.v0, row.v1, row.v2, row.v3, row.v4, row.v5)
    return (row.ptype, *columns[: 5 if row.ptype == "p" else 3])


async def current(session: AsyncSession, slug: str) -> list[Line]:
    """The org's own lines now (in this transaction), sorted."""
    rows = await session.scalars(select(PolicyRule).where(of_org(slug)))
    return sorted((row.origin, *values_of(row)) for row in rows)


def _digest(lines: list[Line]) -> str:
    return hashlib.sha256(json.dumps(lines).encode()).hexdigest()


async def _latest(session: AsyncSession, org: Organization) -> PolicyVersion | None:
    return await session.scalar(
        select(PolicyVersion).where(PolicyVersion.org_id == org.id).order_by(PolicyVersion.number.desc()).limit(1)
    )


async def _write(
    session: AsyncSession, org: Organization, number: int, actor: str, action: str, lines: list[Line]
) -> None:
    session.add(
        PolicyVersion(
            org_id=org.id,
            number=number,
            created_at=utcnow(),
            actor=actor,
            action=action,
            lines=json.dumps(lines),
            digest=_digest(lines),
        )
    )
    await session.flush()


@asynccontextmanager
async def tracked(
    session: AsyncSession, actor: Actor, orgs: Iterable[Organization], action: str
) -> AsyncIterator[None]:
    """Around a change that may touch these orgs' lines: afterwards, each org whose set changed gets the next
    version. The orgs are locked first, so two changes never number the same version."""
    chosen = {org.id: org for org in sorted(orgs, key=lambda org: org.id)}
    for org in chosen.values():  # one writer at a time per org (in id order: no deadlock), then its baseline
        await lock_org(session, org)
        if await _latest(session, org) is None:
            await _write(session, org, 1, actor.subject, "baseline", await current(session, org.slug))
    yield
    await session.flush()
    for org in chosen.values():
        lines = await current(session, org.slug)
        latest = await _latest(session, org)
        if latest is not None and latest.digest == _digest(lines):
            continue
        await _write(session, org, (latest.number if latest else 0) + 1, actor.subject, action, lines)


async def orgs_named(session: AsyncSession, rules: Collection[Rule]) -> list[Organization]:
    """The stored orgs whose domain these lines name (for platform-wide writes: global lines, policy files)."""
    slugs = {rule.values[1] if rule.ptype == "p" else rule.values[2] for rule in rules if len(rule.values) > 2}
    slugs.discard(ANY_DOMAIN)
    if not slugs:
        return []
    found: list[Organization] = []
    ordered = sorted(slugs)
    for start in range(0, len(ordered), 500):
        found.extend(
            await session.scalars(select(Organization).where(Organization.slug.in_(ordered[start : start + 500])))
        )
    return found


async def list_versions(
    session: AsyncSession, org: Organization, *, cursor: str | None, limit: int
) -> Page[VersionView]:
    """Newest first."""
    query = select(PolicyVersion).where(PolicyVersion.org_id == org.id)
    page = await fetch_page(
        session, query, PolicyVersion.number, cursor=cursor, limit=limit, key_of=lambda v: v.number, descending=True
    )
    views = [VersionView(v.number, v.created_at, v.actor, v.action, len(json.loads(v.lines))) for v in page.items]
    return Page(views, page.next_cursor)


async def find(session: AsyncSession, org: Organization, number: int) -> PolicyVersion:
    row = await session.scalar(
        select(PolicyVersion).where(PolicyVersion.org_id == org.id, PolicyVersion.number == number)
    )
    if row is None:
        raise NotFound(f"version: no version {number} of this organization's lines")
    return row


def lines_of(row: PolicyVersion) -> list[Line]:
    return [tuple(line) for line in json.loads(row.lines)]


async def detail(session: AsyncSession, org: Organization, number: int) -> VersionDetail:
    row = await find(session, org, number)
    lines = [VersionLine(text(line), line[0]) for line in lines_of(row)]
    return VersionDetail(row.number, row.created_at, row.actor, row.action, lines)


async def latest_number(session: AsyncSession, org: Organization) -> int:
    latest = await _latest(session, org)
    return latest.number if latest is not None else 0


def texts(added: Iterable[Rule], removed: Iterable[Rule]) -> tuple[list[str], list[str]]:
    return [rule.csv() for rule in added], [rule.csv() for rule in removed]


def compare(before: list[Line], after: list[Line]) -> tuple[list[str], list[str]]:
    """(added, removed) line texts from `before` to `after`; a line whose origin alone changed is neither."""
    old = {line[1:] for line in before}
    new = {line[1:] for line in after}
    return [text(("", *line)) for line in sorted(new - old)], [text(("", *line)) for line in sorted(old - new)]


async def diff(session: AsyncSession, org: Organization, number: int, against: int | None) -> VersionDiff:
    """What version `number` changed from `against` (default: the version before it)."""
    row = await find(session, org, number)
    if against is None:
        against = number - 1 if number > 1 else None
    base = lines_of(await find(session, org, against)) if against is not None else []
    added, removed = compare(base, lines_of(row))
    return VersionDiff(against, number, added, removed)
