"""`gateway audit export|prune`: the audit trail as NDJSON on standard output (the same lines as the admin API's
export), and deleting events past the retention."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.cli.common import CommandError, settings_of, with_database
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import utcnow
from gateway.manage.audit import AuditFilter, Pruned, export_events, prune_events

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def _when(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def cmd_export(args: argparse.Namespace) -> None:
    chosen = AuditFilter(org=args.org, actor=args.actor, action=args.action, since=args.since, until=args.until)

    async def work() -> int:
        engine = create_engine(settings_of(args).database_url)
        written = 0
        try:
            async for chunk in export_events(session_factory(engine), chosen):
                sys.stdout.buffer.write(chunk)
                written += chunk.count(b"\n")
        except OSError as exc:
            raise CommandError(f"cannot reach the database: {exc}") from exc
        finally:
            sys.stdout.buffer.flush()
            await engine.dispose()
        return written

    written = asyncio.run(work())
    print(f"{written} events exported", file=sys.stderr)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = 0
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError(f"a number of days from 1 to 36500, not {value!r}")
    return days


def cmd_prune(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    days = args.days if args.days is not None else settings.audit.retention_days
    if days is None:
        raise CommandError("how old? pass --days N or set [audit] retention_days")
    webhook = settings.audit.webhook_url is not None

    async def work(sessions: async_sessionmaker[AsyncSession]) -> Pruned:
        older_than = utcnow() - dt.timedelta(days=days)
        return await prune_events(sessions, older_than=older_than, keep_undelivered=webhook)

    pruned = asyncio.run(with_database(settings, work))
    print(f"removed {pruned.removed} audit events older than {days} days")
    if pruned.kept:
        why = "not delivered to the webhook yet, or the newest" if webhook else "the newest event always stays"
        print(f"kept {pruned.kept} as old ({why})")


def register(commands: Commands, config: argparse.ArgumentParser) -> None:
    audit = commands.add_parser("audit", help="the audit trail of changes").add_subparsers(dest="action", required=True)
    export = audit.add_parser("export", parents=[config], help="events as NDJSON on standard output, oldest first")
    export.add_argument("--org", help="one org's events (default: every org's and the global ones)")
    export.add_argument("--actor", help="e.g. user:<id> or cli:<name>")
    export.add_argument("--action", help="e.g. member.role")
    export.add_argument("--since", type=_when, help="ISO 8601 time (UTC unless it says otherwise)")
    export.add_argument("--until", type=_when, help="ISO 8601 time, exclusive")
    export.set_defaults(func=cmd_export)
    prune = audit.add_parser(
        "prune", parents=[config], help="delete events older than --days (default: [audit] retention_days)"
    )
    prune.add_argument("--days", type=_days, help="delete events older than this many days")
    prune.set_defaults(func=cmd_prune)
