"""The caller's sessions: list them, end one, end this one, end all."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth.common import PRINCIPAL
from gateway.api.schemas import LogoutResult, SessionView
from gateway.db.audit import write_event
from gateway.errors import InvalidToken
from gateway.identity import sessions
from gateway.identity.tokens import Principal, TokenService


def _session_id(principal: Principal) -> str:
    if principal.session_id is None:
        raise InvalidToken("an access token from a login is needed")
    return principal.session_id


class SessionsController(Controller):
    path = "/auth"
    tags = ["sessions"]
    dependencies = PRINCIPAL

    @post("/logout", status_code=200)
    async def logout(self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]) -> LogoutResult:
        """End this session: its access token and refresh tokens stop working at once."""
        ended = _session_id(principal)
        await sessions.revoke(db, principal.user_id, ended)
        write_event(db, principal.subject, "session.logout", target=ended)
        return LogoutResult(sessions_ended=1)

    @post("/logout-all", status_code=200)
    async def logout_all(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> LogoutResult:
        """End every session of the caller, this one included."""
        ended = await sessions.revoke_all(db, principal.user_id)
        write_event(db, principal.subject, "session.logout_all", target=principal.user_id, after={"ended": ended})
        return LogoutResult(sessions_ended=ended)

    @get("/sessions")
    async def list_sessions(
        self,
        principal: NamedDependency[Principal],
        tokens: NamedDependency[TokenService],
        db: NamedDependency[AsyncSession],
    ) -> Response[list[SessionView]]:
        """The caller's live sessions: created, last used, IP, user agent; `current` marks this one."""
        rows = await sessions.active(db, principal.user_id, tokens.settings)
        views = [
            SessionView(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                ip=row.ip,
                user_agent=row.user_agent,
                current=row.id == principal.session_id,
            )
            for row in rows
        ]
        return Response(views, headers={"cache-control": "no-store"})

    @delete("/sessions/{session:str}")
    async def revoke_session(
        self, session: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> None:
        """End one of the caller's sessions (another user's session id is 404)."""
        await sessions.revoke(db, principal.user_id, session)
        write_event(db, principal.subject, "session.revoke", target=session)
