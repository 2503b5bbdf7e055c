"""`gateway bootstrap-token|signing-keys|encryption-key|outbox`: the secrets and mail of identity."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli.common import in_transaction, settings_of
from gateway.db.models import OutboxMessage
from gateway.identity import accounts

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def cmd_bootstrap_token(args: argparse.Namespace) -> None:
    token = asyncio.run(in_transaction(settings_of(args), accounts.new_bootstrap_token))
    print(token)
    print("POST it to /auth/bootstrap with the first superadmin's email and password within one hour.", file=sys.stderr)


def cmd_signing_keys(args: argparse.Namespace) -> None:
    from gateway.db.engine import create_engine, session_factory
    from gateway.identity.tokens import prune_signing_keys, rotate_signing_key

    async def work() -> str:
        engine = create_engine(settings_of(args).database_url)
        try:
            sessions = session_factory(engine)
            if args.action == "rotate":
                return f"new signing key {await rotate_signing_key(sessions)}; older keys still verify"
            pruned = await prune_signing_keys(sessions, older_than_seconds=args.older_than_seconds)
            return f"{pruned} signing key(s) removed"
        finally:
            await engine.dispose()

    print(asyncio.run(work()))


def cmd_encryption_key(args: argparse.Namespace) -> None:
    from gateway.identity.sealing import new_key

    print(new_key())
    print("Set it as encryption_key (GATEWAY_ENCRYPTION_KEY); keep it out of the database's backups.", file=sys.stderr)


def cmd_outbox(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[OutboxMessage]:
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(args.limit)
        if not args.all:
            query = query.where(OutboxMessage.sent_at.is_(None))
        return list(await session.scalars(query))

    messages = asyncio.run(in_transaction(settings_of(args), work))
    for message in reversed(messages):
        state = f"sent {message.sent_at.isoformat(timespec='seconds')}" if message.sent_at else "not sent"
        print(f"--- #{message.id} {message.created_at.isoformat(timespec='seconds')} ({state})")
        print(f"To: {message.recipient}\nSubject: {message.subject}\n\n{message.body}")
    print(f"{len(messages)} message(s)")


def register(commands: Commands, config: argparse.ArgumentParser) -> None:
    commands.add_parser(
        "bootstrap-token", parents=[config], help="print a one-time secret that creates the first superadmin"
    ).set_defaults(func=cmd_bootstrap_token)
    signing = commands.add_parser("signing-keys", help="JWT signing keys").add_subparsers(dest="action", required=True)
    signing.add_parser("rotate", parents=[config], help="add a new signing key (old ones keep verifying)").set_defaults(
        func=cmd_signing_keys
    )
    prune = signing.add_parser("prune", parents=[config], help="remove old signing keys (never the newest)")
    prune.add_argument("--older-than-seconds", type=int, default=24 * 3600)
    prune.set_defaults(func=cmd_signing_keys)

    commands.add_parser(
        "encryption-key", help="print a new key for encryption_key (seals TOTP secrets at rest)"
    ).set_defaults(func=cmd_encryption_key)

    outbox = commands.add_parser(
        "outbox", parents=[config], help="print emails waiting in the outbox (all of them without SMTP)"
    )
    outbox.add_argument("--all", action="store_true", help="include messages already sent by SMTP")
    outbox.add_argument("--limit", type=int, default=50)
    outbox.set_defaults(func=cmd_outbox)
