"""Users, logins and sessions: the identity operations the CLI and the API share (orgs and members: manage/).

Each function runs in the caller's session and bumps the state version when it changes something the hot path
caches, so every gateway process reloads its snapshot.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import RefreshToken, User, new_id, utcnow
from gateway.errors import Conflict, InvalidToken, Unauthenticated, Unprocessable
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.tokens import TokenService, hash_refresh_token, new_refresh_token
from gateway.policy import store
from gateway.policy.rules import Rule
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
    await store.add_rules(session, [Rule("g", ("user:" + user.id, SUPERADMIN_ROLE, "*"))], origin="api")


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
    user = await session.scalar(select(User).where(User.email == address, User.kind == "human")) if address else None
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
