"""Dependency providers: the runtime from app state, a database session per request, the current principal."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.identity.tokens import Principal
from gateway.runtime import Runtime


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


async def provide_db(runtime: NamedDependency[Runtime]) -> AsyncGenerator[AsyncSession, None]:
    """A session whose transaction commits when the handler returns and rolls back when it raises."""
    async with runtime.sessions() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()


def provide_principal(request: Request[object, object, State], runtime: NamedDependency[Runtime]) -> Principal:
    return runtime.tokens.authenticate(request.headers.get("authorization"))
