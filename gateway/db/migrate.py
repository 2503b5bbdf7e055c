"""`gateway migrate`: the Alembic migrations shipped in the package, then the shipped system roles.

On PostgreSQL both steps hold a transaction-scoped advisory lock, so replicas started together migrate one after
the other (the second finds the schema current and the system lines present). Runs synchronously: Alembic
drives its own event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gateway.db.engine import create_engine, session_factory
from gateway.settings import SHIPPED_POLICY

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
"""Package data (in a checkout, a link to the top-level `migrations/`)."""
MIGRATION_LOCK = 0x67617465  # "gate": the pg_advisory_xact_lock key every `gateway migrate` takes


def _config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The schema revision this gateway needs."""
    head = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision`, then store the shipped system roles; safe to run
    again, and by several processes at once."""
    command.upgrade(_config(database_url), revision)
    if revision == "head":
        asyncio.run(install_system_policy(database_url))


async def install_system_policy(database_url: str) -> int:
    """Store the shipped system roles (see `policy.store.install_system`); return how many lines changed."""
    from gateway.policy.rules import parse_files
    from gateway.policy.store import install_system

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            if session.get_bind().dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            changed = await install_system(session, parse_files([SHIPPED_POLICY]))
            await session.commit()
            return changed
    finally:
        await engine.dispose()
