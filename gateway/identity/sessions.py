"""Logins as sessions: start one, rotate its refresh token, list and revoke them.

A session is one login. Its refresh tokens form a family with the session's id (rotation with reuse detection,
RFC 9700 §4.14.2), and its access tokens carry the id as `sid`. Revoking a session bumps the state version, so
every gateway's snapshot refuses its access tokens on the next reload (at once on the gateway that revoked it).
A session ends at its absolute expiry, after `refresh_idle_seconds` without a refresh, or when revoked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import RefreshToken, Session, User, new_id, utcnow
from gateway.errors import InvalidToken, NotFound
from gateway.identity.tokens import TokenService, hash_refresh_token, new_refresh_token
from gateway.settings import Tokens


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str


@dataclass(frozen=True, slots=True)
class Client:
    """Where a login came from, as shown in the session list."""

    ip: str = ""
    user_agent: str = ""


async def start(db: AsyncSession, tokens: TokenService, user_id: str, client: Client) -> TokenPair:
    """A new session for a user who has just proved their factors: an access token and a refresh token."""
    row = await open_session(db, user_id, client, lifetime_seconds=tokens.settings.refresh_ttl_seconds)
    return await _issue(db, tokens, row)


async def open_session(db: AsyncSession, user_id: str, client: Client, *, lifetime_seconds: int) -> Session:
    """The session row of a new login, ending `lifetime_seconds` from now. A browser's session (the portal's
    cookie) is just this, with `browser.absolute_seconds`: no refresh token; the cookie names the session."""
    now = utcnow()
    row = Session(
        id=new_id(),
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + dt.timedelta(seconds=lifetime_seconds),
        auth_time=now,
        ip=client.ip[:64],
        user_agent=client.user_agent[:255],
    )
    db.add(row)
    await db.flush()
    return row


async def live(db: AsyncSession, session_id: str, *, idle_seconds: int | None) -> Session | None:
    """The session if it may still be used: not revoked, its absolute end not reached, and (unless
    `idle_seconds` is None) used within the last `idle_seconds` (`last_used_at`; the data plane records a
    browser's requests there in batches)."""
    row = await db.get(Session, session_id, populate_existing=True)
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if idle_seconds is not None and row.last_used_at <= now - dt.timedelta(seconds=idle_seconds):
        return None
    return row


async def _issue(db: AsyncSession, tokens: TokenService, row: Session) -> TokenPair:
    refresh, refresh_hash = new_refresh_token()
    db.add(
        RefreshToken(
            id=new_id(),
            token_hash=refresh_hash,
            family_id=row.id,
            user_id=row.user_id,
            created_at=utcnow(),
            expires_at=row.expires_at,
        )
    )
    await db.flush()
    access, ttl = tokens.issue_access_token(row.user_id, session_id=row.id, auth_time=int(row.auth_time.timestamp()))
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl, session_id=row.id)


async def refresh(db: AsyncSession, tokens: TokenService, *, token: str) -> TokenPair:
    """Rotate a refresh token. A token used twice revokes its whole session (RFC 9700 §4.14.2)."""
    now = utcnow()
    token_hash = hash_refresh_token(token)
    idle_limit = now - dt.timedelta(seconds=tokens.settings.refresh_idle_seconds)
    # Claim the token atomically: exactly one concurrent caller sees rowcount 1.
    claimed = await db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
            RefreshToken.created_at > idle_limit,
        )
        .values(used_at=now)
    )
    row = await db.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    if row is None:
        raise InvalidToken("refresh token rejected")
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        if row.used_at is not None and row.revoked_at is None:
            await _revoke(db, row.family_id)  # reuse: someone else holds a copy; end the session
            await db.commit()
        raise InvalidToken("refresh token rejected")
    current = await db.get(Session, row.family_id)
    user = await db.get(User, row.user_id)
    if current is None or current.revoked_at is not None or user is None or user.disabled:
        raise InvalidToken("refresh token rejected")
    current.last_used_at = now
    return await _issue(db, tokens, current)


async def _revoke(db: AsyncSession, session_id: str) -> None:
    now = utcnow()
    await db.execute(
        update(Session).where(Session.id == session_id, Session.revoked_at.is_(None)).values(revoked_at=now)
    )
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await bump_version(db, [changes.session_revoked(session_id)])


async def revoke(db: AsyncSession, user_id: str, session_id: str) -> None:
    """End one of the user's sessions (404 for anyone else's)."""
    row = await db.get(Session, session_id)
    if row is None or row.user_id != user_id:
        raise NotFound("session: no such session")
    await _revoke(db, session_id)


async def revoke_all(db: AsyncSession, user_id: str, *, keep: str | None = None) -> int:
    """End every live session of the user (except `keep`); returns how many ended."""
    ids = [
        session_id
        for session_id in await db.scalars(
            select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
        )
        if session_id != keep
    ]
    for session_id in ids:
        await _revoke(db, session_id)
    return len(ids)


async def active(db: AsyncSession, user_id: str, settings: Tokens) -> list[Session]:
    """The user's live sessions, newest first."""
    now = utcnow()
    return list(
        await db.scalars(
            select(Session)
            .where(
                Session.user_id == user_id,
                Session.revoked_at.is_(None),
                Session.expires_at > now,
                Session.last_used_at > now - dt.timedelta(seconds=settings.refresh_idle_seconds),
            )
            .order_by(Session.created_at.desc(), Session.id)
        )
    )
