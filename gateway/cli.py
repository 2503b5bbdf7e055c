"""The `gateway` command: serve, migrate, users, orgs, members, keys, policy, outbox, demo. Same services as the API."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import logging
import sys
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import cli_policy
from gateway.cli_common import CommandError, in_transaction, settings_of
from gateway.db.models import OutboxMessage
from gateway.errors import GatewayError
from gateway.identity import accounts, apikeys
from gateway.identity.passwords import PasswordHasher
from gateway.manage import keys, members, orgs, users
from gateway.manage.common import MAX_LIMIT, Actor, find_org
from gateway.policy.rules import PolicyError
from gateway.preflight import StartupError
from gateway.settings import ConfigError


def _read_password(prompt: str = "Password: ") -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != first:
            raise CommandError("the passwords do not match")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CommandError("expected the password as one line on standard input")
    return line.removesuffix("\n").removesuffix("\r")


# -- commands -------------------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> None:
    from gateway.policy.store import migrate

    settings = settings_of(args)
    try:
        migrate(settings.database_url)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise CommandError(f"migration failed: {exc}") from exc
    print("database is at the latest schema; the system roles are stored")


def cmd_users_create(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    password = _read_password()
    hasher = PasswordHasher(settings.passwords)

    async def work(session: AsyncSession) -> str:
        user = await accounts.create_user(session, hasher, email=args.email, password=password)
        if args.superadmin:
            await accounts.grant_superadmin(session, user)
        return user.id

    user_id = asyncio.run(in_transaction(settings, work))
    print(f"created user {user_id}{' (superadmin)' if args.superadmin else ''}")


def cmd_users_toggle(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        user = await members.find_user(session, email=args.email)
        await users.set_disabled(session, _actor(), user, disabled=args.disabled)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is {'disabled' if args.disabled else 'enabled'}")


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


def _actor() -> Actor:
    return Actor(subject=f"cli:{getpass.getuser()}")


def cmd_orgs_create(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        return (await orgs.create_org(session, _actor(), slug=args.slug, name=args.name)).id

    org_id = asyncio.run(in_transaction(settings_of(args), work))
    print(f"created organization {args.slug} ({org_id})")


def cmd_members_add(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        org = await find_org(session, args.org)
        await members.set_role(session, _actor(), org, await members.find_user(session, email=args.email), args.role)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is {args.role} in {args.org}")


def cmd_keys_create(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        org = await find_org(session, args.org)
        key, _ = await keys.create_key(
            session,
            _actor(),
            org,
            await members.find_user(session, email=args.email),
            name=args.name,
            expires_in_days=args.expires_days,
            scopes=args.scope,
        )
        return key

    key = asyncio.run(in_transaction(settings_of(args), work))
    print(key)
    print("This is the only time the key is shown; only its hash is stored.", file=sys.stderr)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await keys.revoke_key(session, _actor(), await keys.org_of_key(session, args.id), args.id)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"revoked {args.id}")


def cmd_keys_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[str]:
        org = await find_org(session, args.org)
        listed: list[keys.KeyView] = []
        cursor: str | None = None
        while True:
            page = await keys.list_keys(session, org, cursor=cursor, limit=MAX_LIMIT)
            listed.extend(page.items)
            if (cursor := page.next_cursor) is None:
                break
        return [
            "\t".join(
                (
                    apikeys.listing(row.id, row.last4),
                    row.name,
                    row.created_at.isoformat(timespec="seconds"),
                    _when(row.expires_at),
                    _when(row.last_used_at),
                    "revoked" if row.revoked_at else "active",
                )
            )
            for row in sorted(listed, key=lambda view: view.created_at)
        ]

    rows = asyncio.run(in_transaction(settings_of(args), work))
    print("key\tname\tcreated\texpires\tlast used\tstate")
    for row in rows:
        print(row)


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


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


def cmd_demo(args: argparse.Namespace) -> None:
    from gateway.demo import run_demo

    run_demo(port=args.port, upstream_port=args.upstream_port, database=args.database)


# -- parser ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG, else ./gateway.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[config], help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", help="processes on the same port (a number, or auto = one per CPU)")
    serve.set_defaults(func=cmd_serve)

    commands.add_parser("migrate", parents=[config], help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create_user = users.add_parser("create", parents=[config], help="create a user; password on stdin")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--superadmin", action="store_true", help="may do anything in every org")
    create_user.set_defaults(func=cmd_users_create)
    for action, disabled in (("disable", True), ("enable", False)):
        toggle = users.add_parser(action, parents=[config], help=f"{action} a user's account (all grants and keys)")
        toggle.add_argument("--email", required=True)
        toggle.set_defaults(func=cmd_users_toggle, disabled=disabled)

    orgs = commands.add_parser("orgs", help="manage organizations").add_subparsers(dest="action", required=True)
    create_org = orgs.add_parser("create", parents=[config], help="create an organization")
    create_org.add_argument("--slug", required=True)
    create_org.add_argument("--name", required=True)
    create_org.set_defaults(func=cmd_orgs_create)

    members = commands.add_parser("members", help="manage memberships").add_subparsers(dest="action", required=True)
    add = members.add_parser("add", parents=[config], help="give a user a role in an organization")
    add.add_argument("--org", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--role", required=True)
    add.set_defaults(func=cmd_members_add)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create_key = keys.add_parser("create", parents=[config], help="create a key for a member; printed once")
    create_key.add_argument("--org", required=True)
    create_key.add_argument("--email", required=True, help="the member the key acts as")
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--expires-days", type=int)
    create_key.add_argument("--scope", action="append", default=[], help='narrow to "METHOD /pattern" (repeatable)')
    create_key.set_defaults(func=cmd_keys_create)
    revoke_key = keys.add_parser("revoke", parents=[config], help="revoke a key by id (effective within a poll)")
    revoke_key.add_argument("--id", required=True)
    revoke_key.set_defaults(func=cmd_keys_revoke)
    list_keys = keys.add_parser("list", parents=[config], help="list an organization's keys (never the secret)")
    list_keys.add_argument("--org", required=True)
    list_keys.set_defaults(func=cmd_keys_list)

    cli_policy.register(commands, config)

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

    demo = commands.add_parser("demo", help="run a self-contained demo on SQLite with a demo upstream")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--upstream-port", type=int, default=9080)
    demo.add_argument("--database", default="sqlite+aiosqlite:///./demo.db")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, GatewayError, PolicyError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
