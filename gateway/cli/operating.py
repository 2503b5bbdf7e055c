"""`gateway invitations|roles|service-accounts ...` and `gateway policy versions|version|rollback|shadow`: the rest
of what an operator does through the admin API, through the same services (audited as `cli:<user>`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli.common import CommandError, actor, in_transaction, settings_of, show
from gateway.manage import invitations, keys, policies, roles, shadow, versions
from gateway.manage.common import MAX_LIMIT, every_page, find_org
from gateway.manage.roles import Permission

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def _rows(items: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(item) for item in items]


# -- invitations ----------------------------------------------------------------------------------------------


def cmd_invitations_create(args: argparse.Namespace) -> None:
    settings = settings_of(args)

    async def work(session: AsyncSession) -> invitations.InvitationView:
        org = await find_org(session, args.org)
        return await invitations.invite(
            session, actor(), org, settings.mail, email=args.email, role=args.role, days=args.days
        )

    view = asyncio.run(in_transaction(settings, work))
    print(
        f"invited {view.email} to {args.org} as {view.role} (id {view.id}, until {view.expires_at:%Y-%m-%d %H:%M} UTC)"
    )
    if settings.mail.smtp_host is None:
        print("no SMTP server is configured: `gateway outbox` shows the message with its link", file=sys.stderr)


def cmd_invitations_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        org = await find_org(session, args.org)
        status = None if args.status == "all" else args.status
        found = await every_page(
            lambda cursor: invitations.list_invitations(session, org, status=status, cursor=cursor, limit=MAX_LIMIT)
        )
        return _rows(found)

    columns = ("id", "email", "role", "status", "invited_by", "created_at", "expires_at")
    show(asyncio.run(in_transaction(settings_of(args), work)), columns, as_json=args.json)


def cmd_invitations_revoke(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await invitations.revoke(session, actor(), await find_org(session, args.org), args.id)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"revoked invitation {args.id}")


# -- roles --------------------------------------------------------------------------------------------------


def _permissions(allow: list[str], deny: list[str]) -> list[Permission]:
    """`--allow "GET,POST /api/reports/*"` and `--deny "DELETE /api/*"` as the API's permissions."""
    chosen = []
    for effect, values in (("allow", allow), ("deny", deny)):
        for value in values:
            methods, _, path = value.strip().partition(" ")
            if not path.strip():
                raise CommandError(f"--{effect} {value!r}: expected 'METHOD[,METHOD] /path'")
            chosen.append(Permission(path.strip(), tuple(m.strip().upper() for m in methods.split(",")), effect))
    return chosen


def cmd_roles_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        org = await find_org(session, args.org)
        found = await every_page(lambda cursor: roles.list_roles(session, org, cursor=cursor, limit=MAX_LIMIT))
        return [
            {
                "name": role.name,
                "system": role.system,
                "inherits": ",".join(role.inherits),
                "permissions": "; ".join(f"{','.join(p.methods)} {p.path} {p.effect}" for p in role.permissions),
                "description": role.description,
            }
            for role in found
        ]

    columns = ("name", "system", "inherits", "permissions", "description")
    show(asyncio.run(in_transaction(settings_of(args), work)), columns, as_json=args.json)


def cmd_roles_put(args: argparse.Namespace) -> None:
    """`roles create` makes a role; `roles replace` sets an existing one's description, permissions and parents."""
    permissions = _permissions(args.allow, args.deny)

    async def work(session: AsyncSession) -> None:
        org = await find_org(session, args.org)
        if args.replace:
            await roles.replace_role(
                session,
                actor(),
                org,
                args.name,
                description=args.description,
                permissions=permissions,
                inherits=args.inherits,
                if_match=None,
            )
        else:
            await roles.create_role(
                session,
                actor(),
                org,
                name=args.name,
                description=args.description,
                permissions=permissions,
                inherits=args.inherits,
            )

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"role {args.name} in {args.org} {'replaced' if args.replace else 'created'}")


def cmd_roles_delete(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await roles.delete_role(session, actor(), await find_org(session, args.org), args.name, move_to=args.move_to)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"role {args.name} deleted from {args.org}")


# -- service accounts ---------------------------------------------------------------------------------------


def cmd_accounts_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        org = await find_org(session, args.org)
        found = await every_page(
            lambda cursor: keys.list_service_accounts(session, org, cursor=cursor, limit=MAX_LIMIT)
        )
        return [{"id": a.user_id, "name": a.name, "role": a.role, "created_at": a.created_at} for a in found]

    show(asyncio.run(in_transaction(settings_of(args), work)), ("id", "name", "role", "created_at"), as_json=args.json)


def cmd_accounts_create(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        org = await find_org(session, args.org)
        return (await keys.create_service_account(session, actor(), org, name=args.name, role=args.role)).user_id

    print(asyncio.run(in_transaction(settings_of(args), work)))


def cmd_accounts_delete(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        await keys.delete_service_account(session, actor(), await find_org(session, args.org), args.id)

    asyncio.run(in_transaction(settings_of(args), work))
    print(f"deleted service account {args.id} (its keys stop working)")


def cmd_accounts_key(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        org = await find_org(session, args.org)
        account = await keys.service_account(session, org, args.id)
        key, _ = await keys.create_key(
            session,
            actor(),
            org,
            account,
            name=args.name,
            expires_in_days=args.expires_days,
            scopes=args.scope,
            allowed_ips=args.allow_ip,
        )
        return key

    print(asyncio.run(in_transaction(settings_of(args), work)))
    print("This is the only time the key is shown; only its hash is stored.", file=sys.stderr)


# -- policy versions ----------------------------------------------------------------------------------------


def cmd_versions_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        org = await find_org(session, args.org)
        return _rows(
            await every_page(lambda cursor: versions.list_versions(session, org, cursor=cursor, limit=MAX_LIMIT))
        )

    columns = ("number", "created_at", "actor", "action", "line_count")
    show(asyncio.run(in_transaction(settings_of(args), work)), columns, as_json=args.json)


def cmd_versions_show(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> tuple[list[str], list[str]] | versions.VersionDetail:
        org = await find_org(session, args.org)
        if args.diff:
            found = await versions.diff(session, org, args.number, args.against)
            return found.added, found.removed
        return await versions.detail(session, org, args.number)

    answer = asyncio.run(in_transaction(settings_of(args), work))
    if isinstance(answer, tuple):
        _print_change(*answer)
        return
    for line in answer.lines:
        print(f"{line.line}\t# {line.origin}")


def _print_change(added: list[str], removed: list[str]) -> None:
    for line in added:
        print(f"+ {line}")
    for line in removed:
        print(f"- {line}")
    print(f"{len(added)} line(s) added, {len(removed)} removed")


class _DryRun(Exception):
    pass


def cmd_rollback(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> versions.VersionDiff:
        org = await find_org(session, args.org)
        change = await policies.rollback(session, actor(), org, args.to)
        if args.dry_run:
            raise _DryRun(change)
        return change

    try:
        change = asyncio.run(in_transaction(settings_of(args), work))
    except _DryRun as undone:
        (change,) = undone.args
        _print_change(change.added, change.removed)
        print("dry run: nothing was changed")
        return
    _print_change(change.added, change.removed)
    print(f"{args.org} is at version {change.number} (the lines of version {args.to})")


# -- shadow policies ----------------------------------------------------------------------------------------


def _read_lines(paths: list[str]) -> list[str]:
    lines: list[str] = []
    for name in paths:
        try:
            lines.extend(Path(name).read_text(encoding="utf-8").splitlines())
        except OSError as exc:
            raise CommandError(f"{name}: {exc.strerror}") from None
    return lines


def cmd_shadow_attach(args: argparse.Namespace) -> None:
    files = _read_lines(args.files) if args.files else None

    async def work(session: AsyncSession) -> shadow.ShadowReport:
        return await shadow.attach(
            session,
            actor(),
            name=args.name,
            add=_read_lines(args.add),
            remove=_read_lines(args.remove),
            files=files,
        )

    found = asyncio.run(in_transaction(settings_of(args), work))
    print(
        f"shadow policy {found.id} ({found.name}) attached: {len(found.add)} line(s) added, {len(found.remove)} removed"
    )


def cmd_shadow_report(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> shadow.ShadowReport:
        return await shadow.report(session)

    found = asyncio.run(in_transaction(settings_of(args), work))
    if args.json:
        print(json.dumps(dataclasses.asdict(found), default=str))
        return
    since = f"{found.created_at:%Y-%m-%d %H:%M} UTC"
    print(f"shadow policy {found.id} ({found.name}, {found.mode}) by {found.created_by} since {since}")
    print(f"{found.compared} request(s) compared: {found.would_deny} would be denied, {found.would_allow} allowed")
    rows = [
        {
            "count": d.count,
            "route": d.route,
            "org": d.org,
            "now": "allow" if d.live_allowed else "deny",
            "shadow": "allow" if d.shadow_allowed else "deny",
            "live_rule": d.live_rule or "(no line)",
            "shadow_rule": d.shadow_rule or "(no line)",
            "sample": f"{d.sample['method']} {d.sample['path']} as {d.sample['subject']}",
        }
        for d in found.differences
    ]
    show(rows, ("count", "route", "org", "now", "shadow", "live_rule", "shadow_rule", "sample"), as_json=False)


def cmd_shadow_end(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        if args.promote:
            await shadow.promote(session, actor())
        else:
            await shadow.drop(session, actor())

    asyncio.run(in_transaction(settings_of(args), work))
    print("shadow policy promoted: it is the live policy now" if args.promote else "shadow policy dropped")


def register(commands: Commands, config: argparse.ArgumentParser, policy: Commands) -> None:
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    in_org = argparse.ArgumentParser(add_help=False)
    in_org.add_argument("--org", required=True, help="organization slug")

    group = commands.add_parser("invitations", help="invite people to an organization")
    invites = group.add_subparsers(dest="action", required=True)
    create = invites.add_parser("create", parents=[config, in_org], help="invite an email address with a role")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True)
    create.add_argument("--days", type=int, default=invitations.DEFAULT_DAYS, help="how long the link works")
    create.set_defaults(func=cmd_invitations_create)
    listed = invites.add_parser("list", parents=[config, in_org, listing], help="an org's invitations")
    listed.add_argument(
        "--status", default="pending", choices=("pending", "accepted", "declined", "revoked", "expired", "all")
    )
    listed.set_defaults(func=cmd_invitations_list)
    revoke = invites.add_parser("revoke", parents=[config, in_org], help="end a pending invitation")
    revoke.add_argument("--id", required=True)
    revoke.set_defaults(func=cmd_invitations_revoke)

    role_group = commands.add_parser("roles", help="an organization's roles").add_subparsers(
        dest="action", required=True
    )
    role_group.add_parser("list", parents=[config, in_org, listing], help="system and custom roles").set_defaults(
        func=cmd_roles_list
    )
    for name, text in (("create", "create a custom role"), ("replace", "replace a custom role's permissions")):
        put = role_group.add_parser(name, parents=[config, in_org], help=text)
        put.add_argument("--name", required=True)
        put.add_argument("--description", default="")
        put.add_argument("--allow", action="append", default=[], help="'GET,POST /api/reports/*' (repeatable)")
        put.add_argument("--deny", action="append", default=[], help="'DELETE /api/*' (repeatable)")
        put.add_argument("--inherits", action="append", default=[], help="a parent role (repeatable)")
        put.set_defaults(func=cmd_roles_put, replace=name == "replace")
    drop = role_group.add_parser("delete", parents=[config, in_org], help="delete a custom role")
    drop.add_argument("--name", required=True)
    drop.add_argument("--move-to", help="the role its holders get instead")
    drop.set_defaults(func=cmd_roles_delete)

    accounts = commands.add_parser("service-accounts", help="non-human members that use API keys").add_subparsers(
        dest="action", required=True
    )
    accounts.add_parser("list", parents=[config, in_org, listing], help="an org's service accounts").set_defaults(
        func=cmd_accounts_list
    )
    made = accounts.add_parser("create", parents=[config, in_org], help="create one; prints its id")
    made.add_argument("--name", required=True)
    made.add_argument("--role", required=True)
    made.set_defaults(func=cmd_accounts_create)
    gone = accounts.add_parser("delete", parents=[config, in_org], help="delete one with its keys")
    gone.add_argument("--id", required=True)
    gone.set_defaults(func=cmd_accounts_delete)
    key = accounts.add_parser("key", parents=[config, in_org], help="create a key for one; printed once")
    key.add_argument("--id", required=True)
    key.add_argument("--name", required=True)
    key.add_argument("--expires-days", type=int)
    key.add_argument("--scope", action="append", default=[], help="'METHOD /pattern' (repeatable)")
    key.add_argument(
        "--allow-ip", action="append", default=[], help="an address or network it is accepted from (repeatable)"
    )
    key.set_defaults(func=cmd_accounts_key)

    history = policy.add_parser("versions", parents=[config, in_org, listing], help="versions of an org's lines")
    history.set_defaults(func=cmd_versions_list)
    one = policy.add_parser("version", parents=[config, in_org], help="one version's lines, or --diff")
    one.add_argument("number", type=int)
    one.add_argument("--diff", action="store_true", help="what it changed (from --against, default the one before)")
    one.add_argument("--against", type=int)
    one.set_defaults(func=cmd_versions_show)
    back = policy.add_parser("rollback", parents=[config, in_org], help="make an org's lines a version's again")
    back.add_argument("--to", type=int, required=True, help="the version number")
    back.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    back.set_defaults(func=cmd_rollback)

    shadows = policy.add_parser("shadow", help="try a policy on live traffic without it deciding").add_subparsers(
        dest="shadow_action", required=True
    )
    attach = shadows.add_parser("attach", parents=[config], help="decide every proxied request by a candidate too")
    attach.add_argument("--name", required=True)
    attach.add_argument("--add", nargs="*", default=[], metavar="CSV", help="files of lines the candidate adds")
    attach.add_argument("--remove", nargs="*", default=[], metavar="CSV", help="files of lines it takes away")
    attach.add_argument("--files", nargs="*", metavar="CSV", help="instead: the whole set of policy files to try")
    attach.set_defaults(func=cmd_shadow_attach)
    report = shadows.add_parser("report", parents=[config], help="where the candidate would decide otherwise")
    report.add_argument("--json", action="store_true", help="the whole report as one JSON object")
    report.set_defaults(func=cmd_shadow_report)
    for name, text in (("promote", "make the candidate the live policy"), ("drop", "detach the candidate")):
        shadows.add_parser(name, parents=[config], help=text).set_defaults(
            func=cmd_shadow_end, promote=name == "promote"
        )
