"""Dependency providers: the runtime from app state, a database session per request, the current principal."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.credentials import authenticate
from gateway.errors import InvalidToken
from gateway.identity.tokens import Principal
from gateway.runtime import Runtime

log = logging.getLogger("gateway.api")


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


async def provide_db(
    request: Request[object, object, State], runtime: NamedDependency[Runtime]
) -> AsyncGenerator[AsyncSession, None]:
    """A session whose transaction commits when the handler returns and rolls back when it raises. After a
    write, this process reloads its policy before the response is sent, so the caller's next request (proxied
    or admin) already sees the change; other processes hear of it at once on PostgreSQL (NOTIFY), within a
    poll on SQLite."""
    async with runtime.sessions() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()
    if request.method not in ("GET", "HEAD"):
        runtime.mailer.kick()
        try:
            await runtime.refresh()
        except Exception:
            log.exception("policy reload after a change failed; the next poll retries")


def provide_principal(request: Request[object, object, State], runtime: NamedDependency[Runtime]) -> Principal:
    """The caller of an /auth endpoint: an access token only (API keys do not manage accounts)."""
    principal = authenticate(runtime.tokens, request.headers.get("authorization"), state=runtime.state)
    if principal.key is not None:
        raise InvalidToken("API keys cannot manage accounts; use an access token")
    return principal
