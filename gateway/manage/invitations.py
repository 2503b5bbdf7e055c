"""Invitations: an admin invites an email address with a role; the person at that address accepts (becoming a
member) or declines through a single-use link mailed through the outbox.

The link's secret is stored as its SHA-256 only, works once, expires (7 days unless the admin chose otherwise),
and dies when revoked, declined, or replaced by a newer invitation of the same address to the same org. Holding
the secret proves the mailbox: accepting it as a signed-in user needs that user's address to be the invited
one; without an account, accepting creates one (already verified) with the password given.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import Invitation, Membership, Organization, PolicyRule, User, utcnow
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from gateway.identity import mail
from gateway.identity.accounts import normalise_email
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.tokens import secret_digest
from gateway.manage.common import Actor, Page, fetch_page, lock_org, record
from gateway.manage.members import MemberView, check_grant, member_view
from gateway.manage.orgs import check_room_for_member
from gateway.manage.ownership import owners_guarded
from gateway.manage.roles import SUPERADMIN, implies_owner, require_role
from gateway.settings import Mail

DEFAULT_DAYS = 7
MAX_DAYS = 30
TOKEN_PREFIX = "inv_"  # noqa: S105 - the visible prefix of a link's secret
_BAD_TOKEN = "token: invalid, already used, declined, revoked or expired"  # noqa: S105 - a message


@dataclass(frozen=True, slots=True)
class InvitationView:
    id: str
    email: str
    role: str
    status: str
    """`pending`, `accepted`, `declined`, `revoked` or `expired`."""
    invited_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    accepted_by: str | None


@dataclass(frozen=True, slots=True)
class InvitationDetails:
    """What the holder of a link may see before answering it: which org, which role, for which address."""

    org: str
    org_name: str
    email: str
    role: str
    expires_at: dt.datetime


def status_of(row: Invitation, now: dt.datetime | None = None) -> str:
    if row.accepted_at is not None:
        return "accepted"
    if row.declined_at is not None:
        return "declined"
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if row.expires_at <= (now or utcnow()) else "pending"


def _view(row: Invitation) -> InvitationView:
    return InvitationView(
        id=row.id,
        email=row.email,
        role=row.role,
        status=status_of(row),
        invited_by=row.invited_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_by=row.accepted_by,
    )


def _open() -> list[object]:
    """Conditions of an invitation that can still be answered."""
    return [
        Invitation.accepted_at.is_(None),
        Invitation.declined_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > utcnow(),
    ]


async def invite(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    settings: Mail,
    *,
    email: str,
    role: str,
    days: int = DEFAULT_DAYS,
) -> InvitationView:
    """Invite `email` with `role`: the same rules as adding a member (an owner role takes an owner), checked
    now and again on acceptance (the role must still exist, the org have room, and for an owner role the inviter
    must still be an owner). A pending invitation of the same address is replaced (its link dies)."""
    if org.archived_at is not None:
        raise Conflict("org: archived; restore it before inviting anyone")
    if not 1 <= days <= MAX_DAYS:
        raise Unprocessable(f"expires_in_days: between 1 and {MAX_DAYS}")
    address = normalise_email(email)
    await lock_org(session, org)
    await require_role(session, org, role)
    await check_grant(session, actor, org, None, role)
    member = await session.scalar(
        select(Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id, User.email == address)
    )
    if member is not None:
        raise Conflict("email: already a member of this organization; change their role instead")
    await check_room_for_member(session, org)
    now = utcnow()
    replaced = await session.execute(
        update(Invitation)
        .where(Invitation.org_id == org.id, Invitation.email == address, *_open())  # type: ignore[arg-type]
        .values(revoked_at=now)
    )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = Invitation(
        org_id=org.id,
        email=address,
        role=role,
        token_hash=secret_digest(token),
        invited_by=actor.subject,
        created_at=now,
        expires_at=now + dt.timedelta(days=days),
    )
    session.add(row)
    await session.flush()
    mail.enqueue(
        session,
        to=address,
        subject=f"You are invited to join {org.name}"[:200],
        body=f"You are invited to join the organization {org.name} ({org.slug}) as {role}.\n\n"
        f"Accept or decline here (the link works once, until {row.expires_at:%Y-%m-%d %H:%M} UTC):\n\n"
        f"{mail.link(settings, '/invitations', token)}\n\nIf you did not expect this, ignore this email.\n",
    )
    record(
        session,
        actor,
        "invitation.create",
        org=org.slug,
        target=row.id,
        after={"email": address, "role": role, "expires_at": row.expires_at, "replaced": replaced.rowcount},  # type: ignore[attr-defined]
    )
    return _view(row)


async def list_invitations(
    session: AsyncSession, org: Organization, *, status: str | None, cursor: str | None, limit: int
) -> Page[InvitationView]:
    """The org's invitations by id; `status` keeps one kind (`pending` by default in the API)."""
    query = select(Invitation).where(Invitation.org_id == org.id)
    now = utcnow()
    if status == "pending":
        query = query.where(*_open())  # type: ignore[arg-type]
    elif status == "accepted":
        query = query.where(Invitation.accepted_at.is_not(None))
    elif status == "declined":
        query = query.where(Invitation.declined_at.is_not(None))
    elif status == "revoked":
        query = query.where(Invitation.revoked_at.is_not(None))
    elif status == "expired":
        query = query.where(
            Invitation.accepted_at.is_(None),
            Invitation.declined_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at <= now,
        )
    elif status is not None:
        raise Unprocessable("status: pending, accepted, declined, revoked or expired")
    page = await fetch_page(session, query, Invitation.id, cursor=cursor, limit=limit, key_of=lambda r: r.id)
    return Page([_view(row) for row in page.items], page.next_cursor)


async def revoke(session: AsyncSession, actor: Actor, org: Organization, invitation_id: str) -> None:
    """End a pending invitation: its link stops working at once. Anything else (answered, expired, unknown, or
    another org's) is 404."""
    result = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation_id, Invitation.org_id == org.id, *_open())  # type: ignore[arg-type]
        .values(revoked_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound("invitation: no pending invitation with this id in this organization")
    record(session, actor, "invitation.revoke", org=org.slug, target=invitation_id)


async def _pending(session: AsyncSession, token: str) -> tuple[Invitation, Organization]:
    """The open invitation of this link (and its org), or one 400 for every other case."""
    row = None
    if token.startswith(TOKEN_PREFIX) and len(token) < 100:
        row = await session.scalar(select(Invitation).where(Invitation.token_hash == secret_digest(token)))
    org = await session.get(Organization, row.org_id) if row is not None else None
    if row is None or org is None or status_of(row) != "pending" or org.archived_at is not None:
        raise BadRequest(_BAD_TOKEN)
    return row, org


async def details(session: AsyncSession, token: str) -> InvitationDetails:
    row, org = await _pending(session, token)
    return InvitationDetails(org.slug, org.name, row.email, row.role, row.expires_at)


async def _claim(session: AsyncSession, row: Invitation, **values: object) -> None:
    """Answer the invitation: of concurrent answers exactly one wins."""
    result = await session.execute(
        update(Invitation).where(Invitation.id == row.id, *_open()).values(**values)  # type: ignore[arg-type]
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise BadRequest(_BAD_TOKEN)


async def _may_grant_owner(session: AsyncSession, org: Organization, inviter: str) -> bool:
    """Whether the inviter still may grant owner now: an owner of the org, a platform-wide superadmin, or the
    operator's CLI (which may everything)."""
    if inviter.startswith("cli:"):
        return True
    user_id = inviter.removeprefix("user:")
    membership = await session.get(Membership, (user_id, org.id))
    if membership is not None and await implies_owner(session, org, membership.role):
        return True
    grant = await session.scalar(
        select(PolicyRule.id).where(
            PolicyRule.ptype == "g", PolicyRule.v0 == inviter, PolicyRule.v1 == SUPERADMIN, PolicyRule.v2 == "*"
        )
    )
    return grant is not None


async def decline(session: AsyncSession, token: str) -> None:
    row, org = await _pending(session, token)
    await _claim(session, row, declined_at=utcnow())
    record(session, Actor(f"invitee:{row.email}"), "invitation.decline", org=org.slug, target=row.id)


async def accept(
    session: AsyncSession,
    hasher: PasswordHasher,
    token: str,
    *,
    user_id: str | None,
    password: str | None = None,
    name: str = "",
) -> tuple[MemberView, Organization]:
    """Make the invitee a member with the invited role. Signed in (`user_id`): the account's address must be
    the invited one. Not signed in: an address with no account gets one (verified: the link proves the mailbox)
    with `password`; an address that has an account must sign in first."""
    row, org = await _pending(session, token)
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is None or user.disabled or user.email != row.email:
            raise Forbidden("invitation: it was sent to another address; sign in as the invited address")
    else:
        user = await session.scalar(select(User).where(User.email == row.email))
        if user is not None:
            raise Forbidden("invitation: this address has an account; sign in and accept again")
        if not password:
            raise Unprocessable("password: choose a password for the new account (or sign in first)")
        problem = password_problem(password, email=row.email)
        if problem:
            raise Unprocessable(problem)
        if len(name) > 200:
            raise Unprocessable("name: at most 200 characters")
        now = utcnow()
        user = User(
            email=row.email,
            password_hash=await hasher.hash(password),
            created_at=now,
            email_verified_at=now,
            kind="human",
            name=name.strip(),
        )
        session.add(user)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:  # the same link, accepted twice at once: the other made the account
            raise Conflict("invitation: this address has an account now; sign in and accept again") from None
    await lock_org(session, org)
    if await session.get(Membership, (user.id, org.id)) is not None:
        raise Conflict("invitation: you are a member of this organization already")
    try:
        await require_role(session, org, row.role)
    except Unprocessable:
        raise Conflict(f"invitation: the role {row.role!r} no longer exists here; ask for a new one") from None
    await check_room_for_member(session, org)
    if await implies_owner(session, org, row.role) and not await _may_grant_owner(session, org, row.invited_by):
        raise Conflict("invitation: whoever sent it can no longer grant owner here; ask an owner for a new one")
    await _claim(session, row, accepted_at=utcnow(), accepted_by=user.id)
    membership = Membership(user_id=user.id, org_id=org.id, role=row.role, created_at=utcnow())
    async with owners_guarded(session, Actor(row.invited_by), org):  # the inviter granted it
        session.add(membership)
    await bump_version(session, [changes.membership(user.id, org.slug, old=None, new=row.role)])
    record(
        session,
        Actor("user:" + user.id),
        "invitation.accept",
        org=org.slug,
        target=row.id,
        after={"user_id": user.id, "role": row.role, "invited_by": row.invited_by},
    )
    return member_view(membership, user), org
