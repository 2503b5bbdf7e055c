"""Organizations: create (the creator becomes owner), list, change (name, description, billing address, limits),
archive and restore."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import bump_version
from gateway.db.models import ApiKey, Membership, Organization, PolicyRule, Role, User, utcnow
from gateway.errors import Conflict, Unprocessable
from gateway.identity.accounts import normalise_email
from gateway.manage.common import MAX_EXPIRY_DAYS, Actor, Page, check_if_match, fetch_page, record
from gateway.manage.ownership import OWNER
from gateway.policy.rules import ORG_SLUG_RE


def _check_name(name: str) -> str:
    """1-200 characters, no control characters (a name goes into email subjects and CLI columns)."""
    if not name.strip() or len(name) > 200 or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise Unprocessable("name: 1-200 characters, no control characters")
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


LIMITS = ("max_members", "max_keys", "max_key_days")


def _changes(
    *,
    name: str | None,
    description: str | None,
    billing_email: str | None,
    limits: dict[str, int | None],
    direct_add: bool | None = None,
) -> dict[str, Any]:
    """The columns a PATCH sets: None leaves a field as it is; an empty text clears it; a limit of 0 removes it."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = _check_name(name)
    if description is not None:
        if len(description) > 500 or any(ord(c) < 32 and c not in "\n\t" for c in description):
            raise Unprocessable("description: at most 500 characters, no control characters")
        values["description"] = description
    if billing_email is not None:
        values["billing_email"] = normalise_email(billing_email) if billing_email else None
    for field, value in limits.items():
        if value is None:
            continue
        top = MAX_EXPIRY_DAYS if field == "max_key_days" else 1_000_000
        if not 0 <= value <= top:
            raise Unprocessable(f"{field}: between 0 (no limit) and {top}")
        values[field] = value or None
    if direct_add is not None:
        values["direct_add"] = direct_add
    if not values:
        raise Unprocessable("name: give at least one field to change")
    return values


async def update_org(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    *,
    if_match: int | None,
    name: str | None = None,
    description: str | None = None,
    billing_email: str | None = None,
    limits: dict[str, int | None] | None = None,
    direct_add: bool | None = None,
) -> Organization:
    """Rename, describe, set the billing address or the org's limits. The slug never changes: it is the Casbin
    domain every line of the org names."""
    values = _changes(
        name=name, description=description, billing_email=billing_email, limits=limits or {}, direct_add=direct_add
    )
    before = {field: getattr(org, field) for field in values}
    condition = [Organization.id == org.id]
    if if_match is not None:
        condition.append(Organization.version == if_match)
    result = await session.execute(
        update(Organization).where(*condition).values(**values, version=Organization.version + 1)
    )
    await session.refresh(org)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        check_if_match(org.version, if_match, "organization")
    record(session, actor, "org.update", org=org.slug, target=org.slug, before=before, after=values)
    return org


async def delete_org(session: AsyncSession, actor: Actor, org: Organization, *, grace_days: int) -> dict[str, int]:
    """Delete an archived org for good, `grace_days` after it was archived: its members, custom roles, policy
    lines, API keys and service accounts with it, in one transaction, audited at platform level (the org's own
    audit trail is kept). Returns what went, by kind."""
    if org.archived_at is None:
        raise Conflict("org: archive it first; it can be deleted after the grace period")
    ends = org.archived_at + dt.timedelta(days=grace_days)
    if utcnow() < ends:
        raise Conflict(f"org: archived too recently; it can be deleted from {ends.isoformat(timespec='seconds')}")
    lines = delete(PolicyRule).where(
        or_(
            and_(PolicyRule.ptype == "p", PolicyRule.v1 == org.slug),
            and_(PolicyRule.ptype == "g", PolicyRule.v2 == org.slug),
        )
    )
    gone = {
        "policy_lines": _count(await session.execute(lines)),
        "api_keys": _count(await session.execute(delete(ApiKey).where(ApiKey.org_id == org.id))),
        "members": _count(await session.execute(delete(Membership).where(Membership.org_id == org.id))),
        "roles": _count(await session.execute(delete(Role).where(Role.org_id == org.id))),
    }
    accounts = delete(User).where(User.kind == "service", User.org_id == org.id)
    gone["service_accounts"] = _count(await session.execute(accounts))
    await session.execute(delete(Organization).where(Organization.id == org.id))
    await bump_version(session)
    record(session, actor, "org.delete", org=None, target=org.slug, before={"name": org.name, **gone})
    return gone


def _count(result: Any) -> int:
    return int(result.rowcount or 0)


async def check_room_for_member(session: AsyncSession, org: Organization) -> None:
    """409 when the org already has `max_members` members."""
    if org.max_members is None:
        return
    count = await session.scalar(select(func.count()).select_from(Membership).where(Membership.org_id == org.id))
    if int(count or 0) >= org.max_members:
        raise Conflict(f"org: at its limit of {org.max_members} members")


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
