"""The Alembic migrations shipped in the package (`gateway migrate` then stores the system roles: see
`policy.store.migrate`).

On PostgreSQL the migration holds a transaction-scoped advisory lock, so replicas started together migrate one
after the other (the second finds the schema current). Runs synchronously: Alembic drives its own event loop.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

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
    """Bring the database at `database_url` to `revision`; safe to run again, and by several processes at once."""
    command.upgrade(_config(database_url), revision)
