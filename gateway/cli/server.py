"""`gateway serve`, `migrate` and `demo`: running the gateway and preparing its database."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.cli.common import CommandError, settings_of
from gateway.settings import ConfigError

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def cmd_serve(args: argparse.Namespace) -> None:
    from gateway.serve import serve

    settings = settings_of(args)
    workers: int | Literal["auto"] | None = None
    if args.workers is not None:
        workers = "auto" if args.workers == "auto" else _positive(args.workers)
    serve(settings, host=args.host or settings.host, port=args.port or settings.port, workers=workers)


def _positive(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise ConfigError(f"--workers: {value!r} is not a number between 1 and 256, or auto")
    return int(value)


def cmd_migrate(args: argparse.Namespace) -> None:
    from gateway.policy.store import migrate

    settings = settings_of(args)
    try:
        migrate(settings.database_url)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise CommandError(f"migration failed: {exc}") from exc
    print("database is at the latest schema; the system roles are stored")


def cmd_demo(args: argparse.Namespace) -> None:
    from gateway.demo import run_demo

    run_demo(port=args.port, upstream_port=args.upstream_port, database=args.database)


def register(commands: Commands, config: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[config], help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", help="processes on the same port (a number, or auto = one per CPU)")
    serve.set_defaults(func=cmd_serve)

    commands.add_parser("migrate", parents=[config], help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    demo = commands.add_parser("demo", help="run a self-contained demo on SQLite with a demo upstream")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--upstream-port", type=int, default=9080)
    demo.add_argument("--database", default="sqlite+aiosqlite:///./demo.db")
    demo.set_defaults(func=cmd_demo)
