"""Shared pieces of the command line: the error type, settings from --config, one transaction per command, the
password prompt, the acting operator, how lists are printed."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, session_factory
from gateway.manage.common import Actor
from gateway.settings import Settings, load_settings

T = TypeVar("T")
if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What `add_subparsers` returns; each command group registers its commands on it (generic only to mypy)."""


class CommandError(Exception):
    """A CLI failure with a message for the operator; exit code 1."""


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


async def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one transaction, committed when it returns."""

    async def once(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session:
            result = await work(session)
            await session.commit()
            return result

    return await with_database(settings, once)


async def with_database(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """`work` with a session factory, for commands that use several short transactions (audit prune and tail);
    database failures become a CommandError with one line for the operator."""
    engine = create_engine(settings.database_url)
    try:
        return await work(session_factory(engine))
    except (OperationalError, ProgrammingError) as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            raise CommandError("the database has no schema yet: run `gateway migrate` first") from exc
        raise CommandError(f"database error: {exc.orig}") from exc
    except (DBAPIError, OSError) as exc:
        raise CommandError(f"cannot reach the database: {exc}") from exc
    finally:
        await engine.dispose()


def read_password(prompt: str = "Password: ") -> str:
    """Twice at a terminal; otherwise one line on standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != first:
            raise CommandError("the passwords do not match")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CommandError("expected the password as one line on standard input")
    return line.removesuffix("\n").removesuffix("\r")


def actor() -> Actor:
    """The operator running the command, as the audit log names them."""
    return Actor(subject=f"cli:{getpass.getuser()}")


def show(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool) -> None:
    """A list: tab-separated columns under a header, or (`--json`) one JSON object a line."""
    if as_json:
        for row in rows:
            print(json.dumps(row, default=_text))
        return
    print("\t".join(columns))
    for row in rows:
        print("\t".join(_text(row[column]) for column in columns))


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)
