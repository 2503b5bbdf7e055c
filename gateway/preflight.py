"""What `gateway serve` checks before it listens, so that every start-up failure is one line naming its cause.

Checked: the model file (exists, is a file, readable, loads, calls only functions casbin has), the policy folder
when files are watched, the audit log file, and the database (reachable, and at the schema this gateway needs;
a missing SQLite file is reported, never created). The busy port is the listener's own check (serve.py).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.policy.hot import build_enforcer
from gateway.policy.rules import PolicyError
from gateway.settings import Settings

CONNECT_TIMEOUT = 5.0


class StartupError(Exception):
    """The gateway cannot start; the message is one line naming the cause and what to do."""


def preflight(settings: Settings) -> None:
    """Raise StartupError for the first thing that would stop the gateway from serving."""
    check_model(Path(settings.model_path))
    if settings.watch_files and not Path(settings.policy_dir).is_dir():
        raise StartupError(f"policy_dir: {settings.policy_dir} is not a folder (watch_files is on)")
    if settings.audit_log not in ("stderr", "stdout", "off"):
        try:
            with open(settings.audit_log, "ab"):
                pass
        except OSError as exc:
            raise StartupError(f"audit_log: cannot append to {settings.audit_log}: {exc.strerror or exc}") from exc
    check_database(settings.database_url)


def check_model(path: Path) -> None:
    if path.is_dir():
        raise StartupError(f"model_path: {path} is a folder, not a model file")
    try:
        model = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"model_path: cannot read {path}: {reason}") from exc
    try:
        build_enforcer(model, ())
    except PolicyError as exc:
        raise StartupError(f"model_path: {path}: {exc}") from exc
    except Exception as exc:  # casbin raises assorted types for a model it cannot parse
        raise StartupError(f"model_path: casbin cannot load {path}: {exc}") from exc


def _where(url: str) -> str:
    """The database named without its password."""
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return f"the SQLite file {parts.database}"
    return f"PostgreSQL at {parts.host or 'localhost'}:{parts.port or 5432}/{parts.database or ''}"


def check_database(url: str) -> None:
    """Reachable, and at the newest schema revision; otherwise a StartupError saying what to run."""
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        file = parts.database or ""
        # Connecting would create an empty file, and every request would then fail on a missing table.
        if file and not file.startswith(":memory:") and not Path(file).is_file():
            raise StartupError(f"database_url: {_where(url)} does not exist: run `gateway migrate` to create it")
    asyncio.run(_check_schema(url))


async def _check_schema(url: str) -> None:
    from gateway.db.migrate import head_revision

    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url)
    else:
        engine = create_async_engine(url, connect_args={"timeout": CONNECT_TIMEOUT})
    try:
        async with engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except (ProgrammingError, OperationalError) as exc:
        if "alembic_version" in str(exc) and ("no such table" in str(exc) or "does not exist" in str(exc)):
            raise StartupError(f"database_url: {_where(url)} has no schema: run `gateway migrate` first") from exc
        raise StartupError(f"database_url: cannot use {_where(url)}: {_reason(exc)}") from exc
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise StartupError(f"database_url: cannot reach {_where(url)}: {_reason(exc)}") from exc
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise StartupError(
            f"database_url: {_where(url)} is at schema revision {current or 'none'}, this gateway needs {head}: "
            "run `gateway migrate`"
        )


def _reason(exc: BaseException) -> str:
    """One line: the driver's own message when there is one, never a traceback or a password."""
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(cause, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    message = str(cause).strip().splitlines()
    return message[0] if message else type(cause).__name__
