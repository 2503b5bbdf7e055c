"""`gateway users|orgs|members|keys`: the same services as the management API, audited as `cli:<os user>`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli import orgs as orgs_cli
from gateway.cli.common import actor, in_transaction, read_password, settings_of, show
from gateway.identity import accounts, apikeys
from gateway.identity.passwords import PasswordHasher
from gateway.manage import keys, members, orgs, users
from gateway.manage.common import MAX_LIMIT, every_page, find_org
from gateway.manage.keys import KeyView

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def cmd_users_create(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    password = read_password()
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
        await users.set_disabled(session, actor(), user, disabled=args.disabled)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is {'disabled' if args.disabled else 'enabled'}")


def cmd_orgs_create(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        return (await orgs.create_org(session, actor(), slug=args.slug, name=args.name)).id

    org_id = asyncio.run(in_transaction(settings_of(args), work))
    print(f"created organization {args.slug} ({org_id})")


def cmd_members_add(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        org = await find_org(session, args.org)
        await members.set_role(session, actor(), org, await members.find_user(session, email=args.email), args.role)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is {args.role} in {args.org}")


def cmd_keys_create(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        org = await find_org(session, args.org)
        key, _ = await keys.create_key(
            session,
            actor(),
            org,
            await members.find_user(session, email=args.email),
            name=args.name,
            expires_in_days=args.expires_days,
            scopes=args.scope,
            allowed_ips=args.allow_ip,
        )
        return key

    key = asyncio.run(in_transaction(settings_of(args), work))
    print(key)
    print("This is the only time the key is shown; only its hash is stored.", file=sys.stderr)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await keys.revoke_key(session, actor(), await keys.org_of_key(session, args.id), args.id)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"revoked {args.id}")


def cmd_keys_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[KeyView]:
        org = await find_org(session, args.org)
        listed = await every_page(lambda cursor: keys.list_keys(session, org, cursor=cursor, limit=MAX_LIMIT))
        return sorted(listed, key=lambda view: view.created_at)

    rows = asyncio.run(in_transaction(settings_of(args), work))
    if args.json:
        show([dataclasses.asdict(row) for row in rows], (), as_json=True)
        return
    print("key\tname\tcreated\texpires\tlast used\tstate\tallowed from")
    for row in rows:
        fields = (
            apikeys.listing(row.id, row.last4),
            row.name,
            row.created_at.isoformat(timespec="seconds"),
            _when(row.expires_at),
            _when(row.last_used_at),
            "revoked" if row.revoked_at else "active",
            ",".join(row.allowed_ips) or "anywhere",
        )
        print("\t".join(fields))


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def register(commands: Commands, config: argparse.ArgumentParser) -> None:
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

    orgs_cli.extend({"users": users, "orgs": orgs, "members": members}, config)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create_key = keys.add_parser("create", parents=[config], help="create a key for a member; printed once")
    create_key.add_argument("--org", required=True)
    create_key.add_argument("--email", required=True, help="the member the key acts as")
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--expires-days", type=int)
    create_key.add_argument("--scope", action="append", default=[], help='narrow to "METHOD /pattern" (repeatable)')
    create_key.add_argument(
        "--allow-ip",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="accept the key only from this address or network, IPv4 or IPv6 (repeatable; default: anywhere)",
    )
    create_key.set_defaults(func=cmd_keys_create)
    revoke_key = keys.add_parser("revoke", parents=[config], help="revoke a key by id (effective within a poll)")
    revoke_key.add_argument("--id", required=True)
    revoke_key.set_defaults(func=cmd_keys_revoke)
    list_keys = keys.add_parser("list", parents=[config], help="list an organization's keys (never the secret)")
    list_keys.add_argument("--org", required=True)
    list_keys.add_argument("--json", action="store_true", help="one JSON object a line")
    list_keys.set_defaults(func=cmd_keys_list)
