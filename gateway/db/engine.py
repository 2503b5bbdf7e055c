"""The async engine factory (SQLite pragmas, pool settings) and the change counter writers bump."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import delete, event, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.db import chain as _chain  # noqa: F401 - registers the audit chain's flush listener
from gateway.db import changes
from gateway.db.changes import FULL, Op
from gateway.db.models import StateChange, StateVersion, utcnow


def create_engine(url: str) -> AsyncEngine:
    """Build the engine; SQLite gets WAL, foreign keys and a busy timeout so the CLI and server can share it."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


CHANNEL = "gateway_state"
"""PostgreSQL NOTIFY channel: a notice is sent by the transaction that bumps the version, at its commit."""


STATE_CHANGED = "gateway.state_changed"


KEEP_CHANGES = 10_000
"""Change log entries kept behind the newest; a replica further behind rebuilds from the tables."""
MAX_OPS = 1_000
"""Operations one entry may list; a larger change (a policy load) is cheaper to rebuild than to apply line by line."""


async def bump_version(session: AsyncSession, ops: Sequence[Op] | None = FULL) -> int:
    """Record, in the caller's transaction, that cached state changed, and what changed (`ops`, see
    `gateway.db.changes`; the default None: replicas rebuild everything); return the new version. Every gateway
    process catches up. On PostgreSQL the same transaction notifies CHANNEL, so listening replicas hear of it when
    it commits (and not at all if it rolls back). The session remembers it (`STATE_CHANGED` in `session.info`), so
    whoever commits knows this process must catch up now."""
    session.info[STATE_CHANGED] = True
    bump = (
        update(StateVersion).where(StateVersion.id == 1).values(version=StateVersion.version + 1, updated_at=utcnow())
    )
    if session.get_bind().dialect.update_returning:
        version = int((await session.execute(bump.returning(StateVersion.version))).scalar_one())
    else:  # SQLite before 3.35: the write lock is ours until commit, so the row reads back our own value
        await session.execute(bump)
        version = await read_version(session)
    # The version row is locked until this transaction ends (PostgreSQL) or the database is (SQLite): entries are
    # numbered without gaps in commit order.
    if ops is not None and len(ops) > MAX_OPS:
        ops = FULL
    await session.execute(insert(StateChange).values(version=version, created_at=utcnow(), ops=changes.encode(ops)))
    if version % 100 == 0:
        await session.execute(delete(StateChange).where(StateChange.version <= version - KEEP_CHANGES))
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    return version


async def read_version(session: AsyncSession) -> int:
    version = await session.scalar(select(StateVersion.version).where(StateVersion.id == 1))
    return int(version or 0)


# Failures of the connection itself, whatever the statement was: the server is down, restarting, full, or refuses
# us; connection-level SQLSTATE classes 08 (connection), 57 (operator intervention), 53300, 28 and 3D000.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unknown host, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # 55000 at connect: "not currently accepting connections"
)
_SQLITE_OUTAGES = ("unable to open database", "disk i/o error", "database is locked", "readonly database")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) means the database cannot be used right now, as opposed to a
    statement that failed on its own data: the API answers the first with 503 and Retry-After."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sqlite3.OperationalError) and str(current).lower().startswith(_SQLITE_OUTAGES):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
