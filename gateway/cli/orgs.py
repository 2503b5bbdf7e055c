"""`gateway orgs list|archive|restore|delete|transfer`, `gateway members list|role|remove`, `gateway users list`:
what an operator does through the admin API, from the shell, through the same services (audited as
`cli:<user>`). Lists print tab-separated columns, or one JSON object a line with `--json`."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli.common import actor, in_transaction, settings_of, show
from gateway.manage import members, orgs, users
from gateway.manage.common import MAX_LIMIT, every_page, find_org

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def cmd_orgs_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        found = await every_page(lambda cursor: orgs.list_orgs(session, member_id=None, cursor=cursor, limit=MAX_LIMIT))
        return [
            {"slug": o.slug, "name": o.name, "created_at": o.created_at, "archived": o.archived_at is not None}
            for o in found
        ]

    show(
        asyncio.run(in_transaction(settings_of(args), work)),
        ("slug", "name", "created_at", "archived"),
        as_json=args.json,
    )


def cmd_orgs_archive(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await orgs.set_archived(session, actor(), await find_org(session, args.slug), archived=args.archived)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.slug} is {'archived' if args.archived else 'restored'}")


def cmd_orgs_delete(args: argparse.Namespace) -> None:
    settings = settings_of(args)

    async def work(session: AsyncSession) -> dict[str, int]:
        org = await find_org(session, args.slug)
        return await orgs.delete_org(session, actor(), org, grace_days=settings.orgs.delete_after_days)

    gone = asyncio.run(in_transaction(settings, work))
    print(f"deleted {args.slug}: " + ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in gone.items()))


def cmd_orgs_transfer(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        org = await find_org(session, args.slug)
        previous = (await members.find_user(session, email=args.previous)).id if args.previous else None
        await members.transfer_ownership(session, actor(), org, to=args.to, previous=previous, keep_as=args.keep_as)

    asyncio.run(in_transaction(settings_of(args), work))
    kept = f"; {args.previous} is {args.keep_as}" if args.previous else ""
    print(f"{args.to} owns {args.slug}{kept}")


def cmd_members_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        org = await find_org(session, args.org)
        found = await every_page(
            lambda cursor: members.list_members(
                session, org, cursor=cursor, limit=MAX_LIMIT, search=args.search, role=args.role
            )
        )
        return [
            {
                "user_id": m.user_id,
                "email": m.email,
                "name": m.name,
                "kind": m.kind,
                "role": m.role,
                "created_at": m.created_at,
            }
            for m in found
        ]

    columns = ("user_id", "email", "name", "kind", "role", "created_at")
    show(asyncio.run(in_transaction(settings_of(args), work)), columns, as_json=args.json)


def cmd_members_role(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await members.change_role(session, actor(), await find_org(session, args.org), args.email, args.role)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is {args.role} in {args.org}")


def cmd_members_remove(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await members.remove_member(session, actor(), await find_org(session, args.org), args.email)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"{args.email} is no longer a member of {args.org} (their keys there are revoked)")


def cmd_users_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        found = await every_page(
            lambda cursor: users.list_users(session, email=args.email, cursor=cursor, limit=MAX_LIMIT)
        )
        return [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "kind": u.kind,
                "disabled": u.disabled,
                "created_at": u.created_at,
            }
            for u in found
        ]

    columns = ("id", "email", "name", "kind", "disabled", "created_at")
    show(asyncio.run(in_transaction(settings_of(args), work)), columns, as_json=args.json)


def extend(subcommands: dict[str, Commands], config: argparse.ArgumentParser) -> None:
    """Add these commands to the `orgs`, `members` and `users` groups (people.py makes the groups)."""
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")

    orgs_list = subcommands["orgs"].add_parser("list", parents=[config, listing], help="every org, archived too")
    orgs_list.set_defaults(func=cmd_orgs_list)
    for name, archived in (("archive", True), ("restore", False)):
        change = subcommands["orgs"].add_parser(name, parents=[config], help=f"{name} an organization")
        change.add_argument("--slug", required=True)
        change.set_defaults(func=cmd_orgs_archive, archived=archived)
    delete = subcommands["orgs"].add_parser(
        "delete", parents=[config], help="delete an archived org for good, after orgs.delete_after_days"
    )
    delete.add_argument("--slug", required=True)
    delete.set_defaults(func=cmd_orgs_delete)
    transfer = subcommands["orgs"].add_parser("transfer", parents=[config], help="make a member the owner")
    transfer.add_argument("--slug", required=True)
    transfer.add_argument("--to", required=True, help="email of the member who becomes owner")
    transfer.add_argument("--previous", help="email of the previous owner, who keeps --keep-as")
    transfer.add_argument("--keep-as", default="admin")
    transfer.set_defaults(func=cmd_orgs_transfer)

    members_list = subcommands["members"].add_parser("list", parents=[config, listing], help="an org's members")
    members_list.add_argument("--org", required=True)
    members_list.add_argument("--search", help="part of an email or name")
    members_list.add_argument("--role")
    members_list.set_defaults(func=cmd_members_list)
    role = subcommands["members"].add_parser("role", parents=[config], help="change a member's role")
    role.add_argument("--org", required=True)
    role.add_argument("--email", required=True)
    role.add_argument("--role", required=True)
    role.set_defaults(func=cmd_members_role)
    remove = subcommands["members"].add_parser("remove", parents=[config], help="remove a member (revokes their keys)")
    remove.add_argument("--org", required=True)
    remove.add_argument("--email", required=True)
    remove.set_defaults(func=cmd_members_remove)

    users_list = subcommands["users"].add_parser("list", parents=[config, listing], help="every user")
    users_list.add_argument("--email", help="only this address")
    users_list.set_defaults(func=cmd_users_list)
