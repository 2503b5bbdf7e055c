"""Members of an org: who holds which role there. The membership table is the source of the `g` lines."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import ApiKey, Membership, Organization, User, utcnow
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.identity.accounts import normalise_email
from gateway.manage.common import Actor, Page, check_if_match, fetch_page, lock_org, record
from gateway.manage.orgs import check_room_for_member
from gateway.manage.ownership import owners_guarded, owners_object
from gateway.manage.roles import implies_owner, require_role


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: str
    email: str | None
    name: str
    kind: str
    role: str
    created_at: dt.datetime


def member_version(view: MemberView) -> int:
    """A membership's ETag value: a digest of what a write could change (its role), stable while it stays."""
    digest = hashlib.sha256(f"{view.user_id}\0{view.role}\0{view.created_at.isoformat()}".encode()).hexdigest()
    return int(digest[:14], 16)


def member_view(membership: Membership, user: User) -> MemberView:
    return MemberView(user.id, user.email, user.name, user.kind, membership.role, membership.created_at)


async def find_user(session: AsyncSession, *, email: str | None = None, user_id: str | None = None) -> User:
    """A user by email or id (exactly one of them); 404 when there is none."""
    if (email is None) == (user_id is None):
        raise Unprocessable("user_id: give either email or user_id")
    if user_id is not None:
        if not _is_uuid(user_id):
            raise Unprocessable("user_id: not a user id")
        user = await session.get(User, user_id)
    else:
        user = await session.scalar(select(User).where(User.email == normalise_email(email or "")))
    if user is None:
        raise NotFound("user: no such user")
    return user


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def list_members(
    session: AsyncSession,
    org: Organization,
    *,
    cursor: str | None,
    limit: int,
    search: str | None = None,
    role: str | None = None,
) -> Page[MemberView]:
    """The org's members by user id; `search` keeps those whose email or name contains it (any case), `role`
    those holding exactly that role. Nobody outside the org is ever looked at."""
    query = select(Membership).where(Membership.org_id == org.id)
    if role is not None:
        query = query.where(Membership.role == role)
    if search:
        needle = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matching = select(User.id).where(
            or_(func.lower(User.email).like(needle, escape="\\"), func.lower(User.name).like(needle, escape="\\"))
        )
        query = query.where(Membership.user_id.in_(matching))
    page = await fetch_page(
        session,
        query,
        Membership.user_id,
        cursor=cursor,
        limit=limit,
        key_of=lambda m: m.user_id,
    )
    users = {u.id: u for u in await session.scalars(select(User).where(User.id.in_([m.user_id for m in page.items])))}
    return Page([member_view(m, users[m.user_id]) for m in page.items], page.next_cursor)


async def _membership(session: AsyncSession, org: Organization, member: str) -> tuple[Membership, User]:
    """A member by user id or by email; anything that is not a member of this org is the same 404."""
    user_id: str | None = member
    if "@" in member:
        try:
            address = normalise_email(member)
        except Unprocessable:
            address = None
        user_id = (
            await session.scalar(
                select(Membership.user_id)
                .join(User, User.id == Membership.user_id)
                .where(Membership.org_id == org.id, User.email == address)
            )
            if address
            else None
        )
    membership = (
        await session.get(Membership, (user_id, org.id), populate_existing=True)
        if user_id is not None and _is_uuid(user_id)
        else None
    )
    user = await session.get(User, user_id) if membership is not None else None
    if membership is None or user is None:
        raise NotFound("member: no such member in this organization")
    return membership, user


async def get_member(session: AsyncSession, org: Organization, user_id: str) -> MemberView:
    return member_view(*await _membership(session, org, user_id))


async def check_grant(session: AsyncSession, actor: Actor, org: Organization, user: User | None, role: str) -> None:
    """`role` exists here, and granting it is the actor's to do (an owner role takes an owner)."""
    await require_role(session, org, role)
    if await implies_owner(session, org, role):
        if user is not None and user.kind == "service":
            raise Unprocessable("role: a service account cannot own an organization")
        actor.require(owners_object(org), "POST", "only owners may grant owner")


async def add_member(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    *,
    role: str,
    email: str | None = None,
    user_id: str | None = None,
) -> MemberView:
    """Give an existing user a role in the org; 409 if they are a member already (change the role instead)."""
    if not org.direct_add:
        raise Conflict("org: members join this organization by invitation only (POST /invitations)")
    user = await find_user(session, email=email, user_id=user_id)
    if user.kind == "service" and user.org_id != org.id:
        raise Unprocessable("user_id: a service account belongs to its own organization only")
    await lock_org(session, org)
    await check_grant(session, actor, org, user, role)
    if await session.get(Membership, (user.id, org.id)) is not None:
        raise Conflict("user: already a member of this organization; change their role instead")
    await check_room_for_member(session, org)
    membership = Membership(user_id=user.id, org_id=org.id, role=role, created_at=utcnow())
    async with owners_guarded(session, actor, org):
        session.add(membership)
    await bump_version(session, [changes.membership(user.id, org.slug, old=None, new=role)])
    view = member_view(membership, user)
    record(session, actor, "member.add", org=org.slug, target=user.id, after={"role": role})
    return view


async def change_role(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    user_id: str,
    role: str,
    *,
    if_match: int | None = None,
) -> MemberView:
    """Takes effect on the next request everywhere (the state version moves). The org keeps an owner (see
    `ownership.owners_guarded`). With `if_match` (a `member_version`), a membership changed since is 412."""
    await lock_org(session, org)
    membership, user = await _membership(session, org, user_id)
    check_if_match(member_version(member_view(membership, user)), if_match, "member")
    before = membership.role
    if before == role:
        return member_view(membership, user)
    await check_grant(session, actor, org, user, role)
    if await implies_owner(session, org, before):
        actor.require(owners_object(org), "POST", "only owners may change an owner's role")
    async with owners_guarded(session, actor, org):
        membership.role = role
        membership.granted_by = None  # a role someone chose: no claims mapping touches it again
    await bump_version(session, [changes.membership(user.id, org.slug, old=before, new=role)])
    record(session, actor, "member.role", org=org.slug, target=user.id, before={"role": before}, after={"role": role})
    return member_view(membership, user)


async def transfer_ownership(
    session: AsyncSession, actor: Actor, org: Organization, *, to: str, previous: str | None, keep_as: str
) -> tuple[MemberView, MemberView | None]:
    """Hand the org to the member `to` (id or email) in one transaction: they become `owner`, then `previous`
    (the caller), when they held an owner role here, takes `keep_as` (a superadmin who is not an owner keeps
    what they had). Only owners (or a platform-wide grant) may; the org has an owner at every step."""
    if keep_as == "owner":
        raise Unprocessable("keep_as: the previous owner keeps another role (or use PATCH to add an owner)")
    actor.require(owners_object(org), "POST", "only owners may transfer the organization")
    new_owner = await change_role(session, actor, org, to, "owner")
    kept = None
    membership = (
        await session.get(Membership, (previous, org.id)) if previous and previous != new_owner.user_id else None
    )
    if membership is not None and await implies_owner(session, org, membership.role):
        kept = await change_role(session, actor, org, membership.user_id, keep_as)
    record(session, actor, "org.transfer", org=org.slug, target=new_owner.user_id, after={"previous": previous})
    return new_owner, kept


async def remove_member(
    session: AsyncSession, actor: Actor, org: Organization, user_id: str, *, if_match: int | None = None
) -> None:
    """Remove the membership and revoke the member's API keys in this org (they do not revive on re-adding)."""
    await lock_org(session, org)
    membership, user = await _membership(session, org, user_id)
    check_if_match(member_version(member_view(membership, user)), if_match, "member")
    if user.kind == "service":
        raise Conflict("member: this is a service account; delete it under /service-accounts")
    if await implies_owner(session, org, membership.role):
        actor.require(owners_object(org), "POST", "only owners may remove an owner")
    role = membership.role
    async with owners_guarded(session, actor, org):
        await session.delete(membership)
    revoke = (
        update(ApiKey)
        .where(ApiKey.org_id == org.id, ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if session.get_bind().dialect.update_returning:
        stopped = [changes.key_stopped(key_id) for key_id in await session.scalars(revoke.returning(ApiKey.id))]
        await bump_version(session, [changes.membership(user.id, org.slug, old=role, new=None), *stopped])
    else:  # SQLite before 3.35: which keys stopped is not known here; replicas rebuild
        await session.execute(revoke)
        await bump_version(session)
    record(session, actor, "member.remove", org=org.slug, target=user.id, before={"role": role})


async def set_role(session: AsyncSession, actor: Actor, org: Organization, user: User, role: str) -> MemberView:
    """Add the user with `role`, or change their role if they are a member already (the CLI's `members add`)."""
    if await session.get(Membership, (user.id, org.id)) is None:
        return await add_member(session, actor, org, role=role, user_id=user.id)
    return await change_role(session, actor, org, user.id, role)
