"""Users, organizations, memberships and sessions: the operations the CLI and the API share.

Each function runs in the caller's session and bumps the state version when it changes something the hot path
caches, so every gateway process reloads its snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import bump_version
from gateway.db.models import ApiKey, Membership, Organization, RefreshToken, User, new_id, utcnow
from gateway.errors import Conflict, InvalidToken, NotFound, Unauthenticated, Unprocessable
from gateway.identity import apikeys
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.tokens import TokenService, hash_refresh_token, new_refresh_token
from gateway.policy import rules, store
from gateway.policy.rules import ORG_SLUG_RE, ROLE_RE, Rule
from gateway.settings import Tokens

SUPERADMIN_ROLE = "superadmin"
SYSTEM_ROLES = ("owner", "admin", "member", "viewer")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class LoginFailed(Unauthenticated):
    """The one answer for unknown email, wrong password and disabled account."""

    slug = "login-failed"
    title = "Invalid email or password"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL_RE.match(value) or len(value) > 320:
        raise Unprocessable("email: not a valid email address")
    return value


async def create_user(session: AsyncSession, hasher: PasswordHasher, *, email: str, password: str) -> User:
    address = normalise_email(email)
    problem = password_problem(password)
    if problem:
        raise Unprocessable(problem)
    user = User(email=address, password_hash=await hasher.hash(password), created_at=utcnow())
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("email: a user with this email already exists") from exc
    return user


async def grant_superadmin(session: AsyncSession, user: User) -> None:
    await store.add_rules(session, [Rule("g", ("user:" + user.id, SUPERADMIN_ROLE, "*"))])


async def create_org(session: AsyncSession, *, slug: str, name: str) -> Organization:
    if not ORG_SLUG_RE.match(slug):
        raise Unprocessable("slug: 1-63 lower-case letters, digits and inner hyphens")
    if not name.strip() or len(name) > 200:
        raise Unprocessable("name: 1-200 characters")
    org = Organization(slug=slug, name=name.strip(), created_at=utcnow())
    session.add(org)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("slug: an organization with this slug already exists") from exc
    await bump_version(session)
    return org


async def _org(session: AsyncSession, slug: str) -> Organization:
    org = await session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise NotFound(f"org: no organization with slug {slug!r}")
    return org


async def _user(session: AsyncSession, email: str) -> User:
    user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFound("email: no user with this email")
    return user


async def add_member(session: AsyncSession, *, org_slug: str, email: str, role: str) -> Membership:
    """Give the user `role` in the org (replacing a previous role there)."""
    if not ROLE_RE.match(role):
        raise Unprocessable("role: a role name (a-z, 0-9, '_', '-')")
    org = await _org(session, org_slug)
    user = await _user(session, email)
    membership = await session.get(Membership, (user.id, org.id))
    if membership is None:
        membership = Membership(user_id=user.id, org_id=org.id, role=role, created_at=utcnow())
        session.add(membership)
    else:
        membership.role = role
    await session.flush()
    await bump_version(session)
    return membership


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    settings: Tokens,
    *,
    email: str,
    password: str,
) -> TokenPair:
    """Check the password (always one Argon2 run, whether or not the user exists) and issue tokens."""
    try:
        address = normalise_email(email)
    except Unprocessable:
        address = None
    user = await session.scalar(select(User).where(User.email == address)) if address else None
    valid, new_hash = await hasher.verify(password, user.password_hash if user else None)
    if user is None or not valid or user.disabled:
        raise LoginFailed()
    if new_hash:
        user.password_hash = new_hash
    return await _issue(session, tokens, settings, user.id, family_id=None, expires_at=None)


async def _issue(
    session: AsyncSession,
    tokens: TokenService,
    settings: Tokens,
    user_id: str,
    *,
    family_id: str | None,
    expires_at: dt.datetime | None,
) -> TokenPair:
    refresh, refresh_hash = new_refresh_token()
    row = RefreshToken(
        id=new_id(),
        token_hash=refresh_hash,
        family_id=family_id or new_id(),
        user_id=user_id,
        created_at=utcnow(),
        expires_at=expires_at or utcnow() + dt.timedelta(seconds=settings.refresh_ttl_seconds),
    )
    session.add(row)
    await session.flush()
    access, ttl = tokens.issue_access_token(user_id)
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl)


async def refresh(session: AsyncSession, tokens: TokenService, settings: Tokens, *, token: str) -> TokenPair:
    """Rotate a refresh token. A token used twice revokes its whole family (RFC 9700 §4.14.2)."""
    now = utcnow()
    token_hash = hash_refresh_token(token)
    # Claim the token atomically: exactly one concurrent caller sees rowcount 1.
    claimed = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
    )
    row = await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    if row is None:
        raise InvalidToken("refresh token rejected")
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        if row.used_at is not None and row.revoked_at is None:
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await session.commit()
        raise InvalidToken("refresh token rejected")
    user = await session.get(User, row.user_id)
    if user is None or user.disabled:
        raise InvalidToken("refresh token rejected")
    return await _issue(session, tokens, settings, user.id, family_id=row.family_id, expires_at=row.expires_at)


def validate_scopes(scopes: list[str]) -> list[str]:
    """Each scope is "METHOD /pattern" (METHOD may be *), with the same pattern rules as policy lines."""
    checked = []
    for index, scope in enumerate(scopes):
        method, _, pattern = scope.strip().partition(" ")
        try:
            rules.validate("p", ("viewer", "*", pattern.strip(), method.strip()))
        except rules.PolicyError as exc:
            raise Unprocessable(f"scopes[{index}]: {exc}") from None
        checked.append(f"{method.strip()} {pattern.strip()}")
    return checked


async def create_api_key(
    session: AsyncSession,
    *,
    org_slug: str,
    email: str,
    name: str,
    expires_in_days: int | None = None,
    scopes: list[str] | None = None,
) -> tuple[str, ApiKey]:
    """A key acting as the user in the org; returns (the key, shown only now, and its row)."""
    if not name.strip() or len(name) > 100:
        raise Unprocessable("name: 1-100 characters")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise Unprocessable("expires_in_days: between 1 and 3650")
    checked = validate_scopes(scopes or [])
    org = await _org(session, org_slug)
    user = await _user(session, email)
    if await session.get(Membership, (user.id, org.id)) is None:
        raise Unprocessable("email: the user is not a member of this organization")
    key, key_id = apikeys.new_key()
    now = utcnow()
    row = ApiKey(
        id=key_id,
        org_id=org.id,
        user_id=user.id,
        name=name.strip(),
        key_hash=apikeys.key_hash(key),
        last4=key[-4:],
        scopes=json.dumps(checked),
        created_at=now,
        expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(row)
    await session.flush()
    await bump_version(session)
    return key, row


async def revoke_api_key(session: AsyncSession, key_id: str) -> None:
    """Revoked keys leave every gateway's snapshot on its next reload (within one poll)."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("key: no API key with this id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await bump_version(session)


async def list_api_keys(session: AsyncSession, *, org_slug: str) -> list[ApiKey]:
    org = await _org(session, org_slug)
    return list(await session.scalars(select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.created_at)))
