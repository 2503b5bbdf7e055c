"""Which user an outside identity is: linked already, linked now (through a verified email or while signed in),
created (when the provider allows sign-up), or refused; and unlinking.

Never through an unverified email: an address the provider did not verify neither finds nor creates an account.
Nor to an account whose own address was never confirmed (someone may have registered it before its owner: linking
would hand the owner's sign-in to them). Linking and unlinking bump the state version: the resource server maps
outside access tokens to linked users from the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.audit import write_event
from gateway.db.engine import bump_version
from gateway.db.models import ExternalIdentity, User, utcnow
from gateway.errors import Conflict, Forbidden, NotFound
from gateway.identity.federation.person import Person


class SignupDisabled(Forbidden):
    """Nobody here has the provider's verified address, and the provider does not allow sign-up."""

    slug = "signup-disabled"
    title = "No account for this identity"


class UnverifiedEmail(Forbidden):
    """The provider did not verify an email address, so the identity cannot be matched to or make an account."""

    slug = "provider-email-unverified"
    title = "Email address not verified by the provider"


class AccountDisabled(Forbidden):
    slug = "account-disabled"
    title = "Account disabled"


@dataclass(frozen=True, slots=True)
class Resolved:
    user: User
    created: bool
    linked: bool
    """True when the identity was attached to the user by this sign-in."""


async def resolve(db: AsyncSession, person: Person, *, allow_signup: bool, link_user_id: str | None) -> Resolved:
    """The user `person` signs in as (see the module docstring); writes the identity row and the audit events."""
    now = utcnow()
    identity = await db.scalar(
        select(ExternalIdentity).where(
            ExternalIdentity.provider == person.provider, ExternalIdentity.subject == person.subject
        )
    )
    if link_user_id is not None:
        if identity is not None and identity.user_id != link_user_id:
            raise Conflict("this identity is linked to another account already")
        user = await db.get(User, link_user_id)
        if user is None or user.disabled or user.kind != "human":
            raise AccountDisabled("the account being linked is gone or disabled")
        if identity is None:
            await _link(db, user, person, why="signed-in")
            return Resolved(user=user, created=False, linked=True)
        _seen(identity, person)
        return Resolved(user=user, created=False, linked=False)
    if identity is not None:
        user = await db.get(User, identity.user_id)
        if user is None or user.disabled:
            raise AccountDisabled("this account is disabled")
        _seen(identity, person)
        return Resolved(user=user, created=False, linked=False)
    if person.email is None:
        raise UnverifiedEmail(
            "the provider did not confirm an email address; sign in another way and link this provider from "
            "your account"
        )
    user = await db.scalar(select(User).where(User.email == person.email, User.kind == "human"))
    if user is not None:
        if user.disabled:
            raise AccountDisabled("this account is disabled")
        if user.email_verified_at is None:
            raise UnverifiedEmail(
                "an account with this address exists but its address was never confirmed; confirm it, sign in "
                "and link this provider from your account"
            )
        await _link(db, user, person, why="verified-email")
        return Resolved(user=user, created=False, linked=True)
    if not allow_signup:
        raise SignupDisabled("no account here belongs to this identity, and this provider does not create accounts")
    user = User(email=person.email, password_hash=None, name=person.name, created_at=now, email_verified_at=now)
    db.add(user)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError as exc:  # the same address signed up at the same moment
        raise Conflict("an account with this address was created meanwhile; sign in again") from exc
    write_event(db, f"provider:{person.provider}", "user.signup", target=user.id, after={"provider": person.provider})
    await _link(db, user, person, why="signup")
    return Resolved(user=user, created=True, linked=True)


def _seen(identity: ExternalIdentity, person: Person) -> None:
    identity.last_login_at = utcnow()
    identity.email = person.reported_email


async def _link(db: AsyncSession, user: User, person: Person, *, why: str) -> None:
    now = utcnow()
    row = ExternalIdentity(
        user_id=user.id,
        provider=person.provider,
        subject=person.subject,
        email=person.reported_email,
        created_at=now,
        last_login_at=now,
    )
    db.add(row)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError as exc:
        raise Conflict("this identity was linked meanwhile; sign in again") from exc
    await bump_version(db)
    write_event(
        db,
        f"user:{user.id}" if why == "signed-in" else f"provider:{person.provider}",
        "user.identity.link",
        target=user.id,
        after={"provider": person.provider, "identity": row.id, "through": why},
    )


async def linked(db: AsyncSession, user_id: str) -> list[ExternalIdentity]:
    return list(
        await db.scalars(
            select(ExternalIdentity)
            .where(ExternalIdentity.user_id == user_id)
            .order_by(ExternalIdentity.created_at, ExternalIdentity.id)
        )
    )


async def unlink(db: AsyncSession, user: User, identity_id: str, *, configured: frozenset[str]) -> None:
    """Remove one of the user's linked identities, unless it is their last way to sign in (no password and no
    other identity at a configured provider): 409 then. 404 for anyone else's."""
    identity = await db.get(ExternalIdentity, identity_id)
    if identity is None or identity.user_id != user.id:
        raise NotFound("identity: no such linked identity")
    others = await db.scalar(
        select(func.count())
        .select_from(ExternalIdentity)
        .where(
            ExternalIdentity.user_id == user.id,
            ExternalIdentity.id != identity.id,
            ExternalIdentity.provider.in_(configured),
        )
    )
    if user.password_hash is None and not others:
        raise Conflict("this is the account's only way to sign in: set a password or link another provider first")
    await db.delete(identity)
    await bump_version(db)
    write_event(
        db,
        f"user:{user.id}",
        "user.identity.unlink",
        target=user.id,
        before={"provider": identity.provider, "identity": identity.id},
    )
