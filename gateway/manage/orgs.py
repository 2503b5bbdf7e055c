"""Organizations: create (the creator becomes owner), list, rename, archive and restore."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import bump_version
from gateway.db.models import Membership, Organization, User, utcnow
from gateway.errors import Conflict, Unprocessable
from gateway.manage.common import Actor, Page, check_if_match, fetch_page, record
from gateway.manage.ownership import OWNER
from gateway.policy.rules import ORG_SLUG_RE


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > 200:
        raise Unprocessable("name: 1-200 characters")
    return name.strip()


async def create_org(
    session: AsyncSession, actor: Actor, *, slug: str, name: str, owner: User | None = None
) -> Organization:
    """A new org; `owner` (the creator, through the API) becomes its first owner."""
    if not ORG_SLUG_RE.match(slug):
        raise Unprocessable("slug: 1-63 lower-case letters, digits and inner hyphens")
    org = Organization(slug=slug, name=_check_name(name), created_at=utcnow(), version=1)
    session.add(org)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("slug: an organization with this slug already exists") from exc
    if owner is not None:
        session.add(Membership(user_id=owner.id, org_id=org.id, role=OWNER, created_at=utcnow()))
        await session.flush()
    await bump_version(session)
    record(session, actor, "org.create", org=slug, target=slug, after={"name": org.name, "owner": owner and owner.id})
    return org


async def owned_by(session: AsyncSession, user_id: str) -> int:
    """How many live organizations `user_id` holds the `owner` role in (the self-service limit)."""
    count = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user_id, Membership.role == OWNER, Organization.archived_at.is_(None))
    )
    return int(count or 0)


async def list_orgs(
    session: AsyncSession, *, member_id: str | None, cursor: str | None, limit: int
) -> Page[Organization]:
    """Orgs `member_id` belongs to (archived ones excluded), or every org (archived included) when None."""
    query = select(Organization)
    if member_id is not None:
        query = query.join(Membership, Membership.org_id == Organization.id).where(
            Membership.user_id == member_id, Organization.archived_at.is_(None)
        )
    return await fetch_page(session, query, Organization.slug, cursor=cursor, limit=limit, key_of=lambda o: o.slug)


async def update_org(
    session: AsyncSession, actor: Actor, org: Organization, *, name: str, if_match: int | None
) -> Organization:
    """Rename. The slug never changes: it is the Casbin domain every line of the org names."""
    checked = _check_name(name)
    before = org.name
    condition = [Organization.id == org.id]
    if if_match is not None:
        condition.append(Organization.version == if_match)
    result = await session.execute(
        update(Organization).where(*condition).values(name=checked, version=Organization.version + 1)
    )
    await session.refresh(org)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        check_if_match(org.version, if_match, "organization")
    record(
        session, actor, "org.update", org=org.slug, target=org.slug, before={"name": before}, after={"name": checked}
    )
    return org


async def set_archived(session: AsyncSession, actor: Actor, org: Organization, *, archived: bool) -> Organization:
    """Archive (soft delete: every member and key is denied at once) or restore; idempotent."""
    if (org.archived_at is not None) == archived:
        return org
    await session.execute(
        update(Organization)
        .where(Organization.id == org.id)
        .values(archived_at=utcnow() if archived else None, version=Organization.version + 1)
    )
    await session.refresh(org)
    await bump_version(session)
    record(session, actor, "org.archive" if archived else "org.restore", org=org.slug, target=org.slug)
    return org
