"""`gateway audit export|prune|tail|verify|checkpoint`: the audit trail as NDJSON on standard output (the same
lines as the admin API's export), deleting events past the retention (with a signed checkpoint at the cut),
following new events as they are committed, and checking the tamper-evident chain."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.cli.common import CommandError, settings_of, with_database
from gateway.db.chain import ADMIN_STREAM
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import utcnow
from gateway.identity.tokens import load_or_create_keys
from gateway.manage.audit import (
    AuditFilter,
    Pruned,
    before_last,
    destinations,
    events_after,
    export_events,
    prune_events,
    settled_up_to,
    view,
)
from gateway.manage.audit_chain import (
    Linked,
    Verdict,
    checkpoint_trail,
    checkpointed_streams,
    checkpoints,
    decision_records,
    pinned_keys,
    stored_trail,
    trail_record,
    verify,
)

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
    deliveries = destinations(settings.audit)
    webhook = bool(deliveries)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> Pruned:
        older_than = utcnow() - dt.timedelta(days=days)
        ring = await load_or_create_keys(sessions)  # for the signed checkpoint at the cut
        return await prune_events(
            sessions, older_than=older_than, keep_undelivered=webhook, deliveries=deliveries, ring=ring
        )

    pruned = asyncio.run(with_database(settings, work))
    print(f"removed {pruned.removed} audit events older than {days} days")
    if pruned.kept:
        why = "not delivered to the webhook yet, or the newest" if webhook else "the newest event always stays"
        print(f"kept {pruned.kept} as old ({why})")


def _print_verdict(verdict: Verdict, what: str) -> None:
    if verdict.ok:
        span = f"seq {verdict.first_seq} to {verdict.last_seq}" if verdict.checked else "no chained records"
        print(f"{what}: OK, {verdict.checked} record(s) ({span}), head {verdict.last_hash or '-'}")
    else:
        print(f"{what}: BROKEN at {verdict.broken_at}: {verdict.problem} ({verdict.checked} record(s) good before it)")
    if verdict.unchained:
        print(f"  {verdict.unchained} record(s) from before the chain existed are not covered")
    for note in verdict.notes:
        print(f"  note: {note}")


def _read_file(name: str) -> list[bytes]:
    try:
        with open(name, "rb") as handle:
            return handle.readlines()
    except OSError as exc:
        raise CommandError(f"{name}: {exc.strerror}") from None


def cmd_verify(args: argparse.Namespace) -> None:
    """Check the trail in the database, or a file: an `audit export` (NDJSON of changes) or a request decision
    log written with `[audit] chain_decisions` (one chain per process). Exit 1 naming the first broken record."""
    settings = settings_of(args)
    lines = _read_file(args.file) if args.file else None
    pinned = _public_keys(args.public_keys) if args.public_keys else None

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, Verdict]]:
        keys = pinned if pinned is not None else (await load_or_create_keys(sessions)).public_keys
        if lines is None:
            async with sessions() as session:
                known = await checkpoints(session, keys, ADMIN_STREAM, pinned=pinned is not None)
            return [("the trail of changes", verify(ADMIN_STREAM, await stored_trail(sessions), known))]
        streams = _streams(lines)
        verdicts = []
        for stream, records in streams.items():
            async with sessions() as session:
                known = await checkpoints(session, keys, stream, pinned=pinned is not None)
            label = "the trail of changes" if stream == ADMIN_STREAM else f"decision stream {stream}"
            verdicts.append((label, verify(stream, records, known)))
        if ADMIN_STREAM not in streams and verdicts:
            async with sessions() as session:
                absent = sorted((await checkpointed_streams(session)) - set(streams) - {ADMIN_STREAM})
            if absent:  # a log rotated away, or a whole process's lines removed: say so
                print(f"note: checkpointed decision streams not in this file: {', '.join(absent)}")
        return verdicts

    verdicts = asyncio.run(with_database(settings, work))
    for label, verdict in verdicts:
        _print_verdict(verdict, label)
    if not verdicts:
        raise CommandError(f"{args.file}: no audit records in it")
    if not all(verdict.ok for _, verdict in verdicts):
        raise SystemExit(1)


def _public_keys(name: str) -> dict[str, Ed25519PublicKey]:
    try:
        keys = pinned_keys(json.loads(Path(name).read_text(encoding="utf-8")))
    except OSError as exc:
        raise CommandError(f"{name}: {exc.strerror}") from None
    except (ValueError, TypeError, AttributeError):
        raise CommandError(f"{name}: not a JWK Set (save /.well-known/jwks.json)") from None
    if not keys:
        raise CommandError(f"{name}: no Ed25519 keys in it")
    return keys


def _streams(lines: list[bytes]) -> dict[str, list[Linked]]:
    """A file's records by chain: an export's events are one chain; a decision log holds one per process."""
    first = next((line for line in lines if line.strip()), b"")
    try:
        is_export = b'"action"' in first and "action" in json.loads(first)
    except ValueError:
        raise CommandError("the file is neither an audit export nor a decision log (not JSON lines)") from None
    if is_export:
        records = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    records.append(trail_record(json.loads(line), number))
                except (ValueError, KeyError, TypeError):
                    records.append(Linked(None, None, None, b"", number))
        return {ADMIN_STREAM: records}
    streams: dict[str, list[Linked]] = {}
    for stream, record in decision_records(lines):
        streams.setdefault(stream or "(unchained)", []).append(record)
    return streams


def cmd_checkpoint(args: argparse.Namespace) -> None:
    async def work(sessions: async_sessionmaker[AsyncSession]) -> int | None:
        return await checkpoint_trail(sessions, await load_or_create_keys(sessions))

    seq = asyncio.run(with_database(settings_of(args), work))
    print(f"checkpoint written at seq {seq}" if seq is not None else "the head is checkpointed already")


TAIL_SECONDS = 1.0
"""How often `audit tail` looks for new events."""
TAIL_BATCH = 500
TAIL_COLUMNS = ("id", "created_at", "actor", "action", "org", "target", "request_id")


def _column(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def cmd_tail(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    encoder = msgspec.json.Encoder()

    async def settled(sessions: async_sessionmaker[AsyncSession]) -> int:
        """The largest id that can be shown without skipping an earlier one (waiting while writers finish)."""
        while True:
            async with sessions() as session:
                found = await settled_up_to(session)
            if found is not None:
                return found
            await asyncio.sleep(TAIL_SECONDS / 4)

    async def follow(sessions: async_sessionmaker[AsyncSession]) -> None:
        up_to = await settled(sessions)
        async with sessions() as session:
            after = await before_last(session, args.last, up_to=up_to, org=args.org)
        if not args.json:
            print("\t".join(TAIL_COLUMNS), flush=True)
        while True:
            async with sessions() as session:
                rows = await events_after(session, after, up_to=up_to, limit=TAIL_BATCH, org=args.org)
            try:
                for row in rows:
                    shown = view(row)
                    if args.json:
                        sys.stdout.buffer.write(encoder.encode(shown) + b"\n")
                    else:
                        sys.stdout.write("\t".join(_column(getattr(shown, name)) for name in TAIL_COLUMNS) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                # The reader went away (`| head`): stop quietly, and keep Python from complaining as it exits.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return
            if len(rows) == TAIL_BATCH:
                after = rows[-1].id
                continue
            after = up_to
            await asyncio.sleep(TAIL_SECONDS)
            up_to = await settled(sessions)

    asyncio.run(with_database(settings, follow))


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
    tail = audit.add_parser("tail", parents=[config], help="print new events as they are committed (Ctrl-C stops)")
    tail.add_argument("--org", help="one org's events (default: every org's and the global ones)")
    tail.add_argument("--json", action="store_true", help="one JSON object a line, as audit export writes them")
    tail.add_argument("--last", type=int, default=10, metavar="N", help="first show the last N events (default 10)")
    tail.set_defaults(func=cmd_tail)
    check = audit.add_parser(
        "verify", parents=[config], help="check the tamper-evident chain (exit 1 names the first broken record)"
    )
    check.add_argument("--file", help="an `audit export` or a chained decision log (default: the database)")
    check.add_argument(
        "--public-keys",
        metavar="JWKS",
        help="check checkpoint signatures only against these keys (a saved /.well-known/jwks.json), not the database's",
    )
    check.set_defaults(func=cmd_verify)
    audit.add_parser("checkpoint", parents=[config], help="sign and store the trail's head now").set_defaults(
        func=cmd_checkpoint
    )
