"""Alembic migrations build the schema from empty on both databases, and match the models exactly."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Base


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_from_empty_matches_models(database_url: str) -> None:
    """The session database was migrated from empty; its schema equals the models (no autogenerate diff)."""
    await asyncio.to_thread(upgrade, database_url)  # a second run is a no-op (Alembic runs its own loop)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            assert {
                "users",
                "organizations",
                "memberships",
                "policy_rules",
                "signing_keys",
                "refresh_tokens",
                "state_version",
                "alembic_version",
            } <= tables
            assert await connection.run_sync(_diff) == []
            version = await connection.scalar(text("SELECT version FROM state_version WHERE id = 1"))
            assert version is not None
    finally:
        await engine.dispose()
