"""Alembic migrations build the schema from empty on both databases, and match the models exactly."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from gateway.db.engine import create_engine, session_factory
from gateway.db.migrate import MIGRATION_LOCK, upgrade
from gateway.db.models import Base
from gateway.policy.rules import parse_files
from gateway.policy.store import SYSTEM_ORIGIN, migrate, stored_rules
from gateway.settings import SHIPPED_POLICY
from tests.waiting import eventually


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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_migrations_take_an_advisory_lock_on_postgresql(database_url: str, tmp_path: Path) -> None:
    """While another session holds the migration lock, `gateway migrate` waits; it finishes once released
    (replicas starting together migrate one after the other)."""
    url = make_url(database_url)
    holder = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "migrate",
            cwd=tmp_path,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                "GATEWAY_DATABASE_URL": database_url,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def waiting_on_the_lock() -> bool:
            assert migrate.returncode is None, "migrate finished while another session held the lock"
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return bool(waiting == 1)

        await eventually(waiting_on_the_lock, within=30, every=0.05, what="the migration never waited on the lock")
        assert migrate.returncode is None
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        out, err = await asyncio.wait_for(migrate.communicate(), 60)
        assert migrate.returncode == 0, err
        assert b"the system roles are stored" in out
    finally:
        await holder.close()


async def test_migrate_stores_the_system_roles_once(database_url: str) -> None:
    """`gateway migrate` makes the stored system lines exactly the shipped system.csv, however often it runs;
    a shipped line loaded earlier from a policy file becomes a system line."""
    engine = create_engine(database_url)
    try:
        await asyncio.to_thread(migrate, database_url)
        await asyncio.to_thread(migrate, database_url)
        async with session_factory(engine)() as session:
            system = await stored_rules(session, origin=SYSTEM_ORIGIN)
        assert sorted(map(str, system)) == sorted(map(str, parse_files([SHIPPED_POLICY])))
    finally:
        await engine.dispose()
