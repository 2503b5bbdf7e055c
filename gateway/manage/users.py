"""Users as the platform sees them: list them, disable and enable accounts (superadmins and the CLI)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import bump_version
from gateway.db.models import User
from gateway.identity import sessions
from gateway.manage.common import Actor, Page, fetch_page, record


async def list_users(session: AsyncSession, *, email: str | None, cursor: str | None, limit: int) -> Page[User]:
    query = select(User)
    if email is not None:
        query = query.where(User.email == email.strip().lower())
    return await fetch_page(session, query, User.id, cursor=cursor, limit=limit, key_of=lambda u: u.id)


async def set_disabled(session: AsyncSession, actor: Actor, user: User, *, disabled: bool) -> User:
    """A disabled user loses every grant, membership and API key on the next reload (at once on this
    gateway), and every refresh token now; enabling restores grants and memberships, not tokens or keys'
    revocations. Idempotent."""
    if user.disabled == disabled:
        return user
    await session.execute(update(User).where(User.id == user.id).values(disabled=disabled))
    if disabled:
        await sessions.revoke_all(session, user.id)  # access tokens stop at once, refresh tokens too
    await session.refresh(user)
    await bump_version(session)
    record(session, actor, "user.disable" if disabled else "user.enable", org=None, target=user.id)
    return user
