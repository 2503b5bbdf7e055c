"""`gateway policy ...`: load, lint, test, explain, diff, sync, export. Policy files are the reviewed source."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli.common import CommandError, actor, in_transaction, settings_of
from gateway.db.models import AuditRecord, User, utcnow
from gateway.errors import InvalidPath
from gateway.manage import versions
from gateway.paths import canonical_path
from gateway.policy.hot import HotState
from gateway.policy.lint import lint
from gateway.policy.rules import Rule, parse_files
from gateway.policy.store import (
    SYSTEM_ORIGIN,
    add_rules,
    diff_rules,
    is_grant,
    read_state,
    remove_rules,
    stored_rules,
)
from gateway.policy.testing import read_cases, run_cases

if TYPE_CHECKING:
    from gateway.cli.common import Commands


def _files(args: argparse.Namespace) -> list[Path]:
    """The files named on the command line, else the CSV files of the configured `policy_dir`."""
    folder = Path(settings_of(args).policy_dir)
    files = [Path(name) for name in args.files] or sorted(folder.glob("*.csv"))
    if not files:
        raise CommandError(f"no policy files given and none found in {folder}/")
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise CommandError(f"not found: {', '.join(missing)}")
    return files


def _model(args: argparse.Namespace) -> Path:
    return Path(args.model) if args.model else Path(settings_of(args).model_path)


def cmd_load(args: argparse.Namespace) -> None:
    files = _files(args)
    rules = parse_files(files)

    async def work(session: AsyncSession) -> int:
        async with versions.tracked(session, actor(), await versions.orgs_named(session, rules), "policy.load"):
            return await add_rules(session, rules)

    added = asyncio.run(in_transaction(settings_of(args), work))
    print(f"{len(rules)} lines read from {len(files)} file(s); {added} added, {len(rules) - added} already present")


def cmd_lint(args: argparse.Namespace) -> None:
    files = _files(args)
    findings = lint(_model(args), files)
    for finding in findings:
        print(finding)
    errors = sum(1 for finding in findings if finding.severity == "error")
    print(f"{len(files)} file(s): {errors} error(s), {len(findings) - errors} warning(s)")
    if errors:
        raise SystemExit(1)


def cmd_test(args: argparse.Namespace) -> None:
    tables = [Path(name) for name in args.tables] or sorted(Path("policies/tests").glob("*.csv"))
    if not tables:
        raise CommandError("no assertion tables given and none found in policies/tests/")
    results = run_cases(_model(args), parse_files(_files(args)), read_cases(tables))
    failed = 0
    for case, decision in results:
        if decision.allowed != case.allow:
            failed += 1
            expected, got = ("allow", "deny") if case.allow else ("deny", "allow")
            print(f"{case.source}:{case.line}: {case}: expected {expected}, got {got} ({decision.reason})")
    print(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)


def cmd_explain(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    try:
        path = canonical_path(args.path.encode())
    except InvalidPath as exc:
        raise CommandError(f"path: {exc.detail}") from exc

    async def work(session: AsyncSession) -> tuple[str, object]:
        user_id = await session.scalar(select(User.id).where(User.email == args.user.strip().lower()))
        if user_id is None:
            raise CommandError(f"no user with email {args.user!r}")
        return "user:" + user_id, await read_state(session)

    subject, state = asyncio.run(in_transaction(settings, work))
    engine = HotState(settings.model_path)
    engine.install(state)  # type: ignore[arg-type]
    if engine.org(args.org) is None:
        raise CommandError(f"no organization {args.org!r}")
    decision = engine.explain(subject, args.org, path, args.method.upper())
    roles = ", ".join(engine.roles_of(subject, args.org)) or "none"
    print(f"{'ALLOW' if decision.allowed else 'DENY'} {args.method.upper()} {path} for {args.user} in {args.org}")
    print(f"roles: {roles}")
    print(f"decided by: {decision.reason}")


async def _compute(session: AsyncSession, files: list[Rule], include_grants: bool) -> tuple[list[Rule], list[Rule]]:
    # Lines that came from files; lines written through the admin API belong to their orgs, except user grants
    # (superadmin), which --include-grants puts under the files' control too.
    # The shipped system roles are stored by `gateway migrate` (origin `system`): never removed by a sync, and not
    # added again when a policy file repeats them.
    stored = await stored_rules(session, origin="file")
    if include_grants:
        stored += [rule for rule in await stored_rules(session, origin="api") if is_grant(rule)]
    system = set(await stored_rules(session, origin=SYSTEM_ORIGIN))
    added, removed = diff_rules(files, stored, include_grants=include_grants)
    return [rule for rule in added if rule not in system], removed


def _print_diff(added: list[Rule], removed: list[Rule]) -> None:
    for rule in removed:
        print(f"- {rule.csv()}")
    for rule in added:
        print(f"+ {rule.csv()}")
    print(f"{len(added)} to add, {len(removed)} to remove")


def cmd_diff(args: argparse.Namespace) -> None:
    rules = parse_files(_files(args))

    async def work(session: AsyncSession) -> tuple[list[Rule], list[Rule]]:
        return await _compute(session, rules, args.include_grants)

    added, removed = asyncio.run(in_transaction(settings_of(args), work))
    _print_diff(added, removed)


def cmd_sync(args: argparse.Namespace) -> None:
    files = _files(args)
    rules = parse_files(files)

    async def work(session: AsyncSession) -> tuple[list[Rule], list[Rule]]:
        added, removed = await _compute(session, rules, args.include_grants)
        if not args.prune:
            removed = []
        if args.dry_run or not (added or removed):
            return added, removed
        touched = await versions.orgs_named(session, [*added, *removed])
        async with versions.tracked(session, actor(), touched, "policy.sync"):
            await add_rules(session, added)
            await remove_rules(session, removed)
        session.add(
            AuditRecord(
                created_at=utcnow(),
                actor=actor().subject,
                action="policy.sync",
                org=None,
                target=", ".join(str(path) for path in files)[:255],
                detail=json.dumps({"added": [r.csv() for r in added], "removed": [r.csv() for r in removed]}),
            )
        )
        return added, removed

    added, removed = asyncio.run(in_transaction(settings_of(args), work))
    _print_diff(added, removed)
    if args.dry_run:
        print("dry run: nothing was changed")


def cmd_export(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> list[Rule]:
        return await stored_rules(session)

    rules = asyncio.run(in_transaction(settings_of(args), work))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Exported from the gateway's database; `gateway policy sync` reads it back unchanged."]
    lines += [rule.csv() for rule in rules if rule.ptype == "p"] + [rule.csv() for rule in rules if rule.ptype == "g"]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(rules)} lines written to {out}")


def register(commands: Commands, config: argparse.ArgumentParser) -> Commands:
    """The `policy` group; returned so that other modules add their `policy` commands to it."""
    policy = commands.add_parser("policy", help="policy files and the policy store").add_subparsers(
        dest="action", required=True
    )
    files_help = "policy CSV files (default: policies/*.csv)"

    load = policy.add_parser("load", parents=[config], help="add lines from CSV files to the store (idempotent)")
    load.add_argument("files", nargs="*", help=files_help)
    load.set_defaults(func=cmd_load)

    for name, func, text in (
        ("lint", cmd_lint, "report errors and surprises in model.conf and policy files (exit 1 on errors)"),
        ("test", cmd_test, "run assertion tables against the model and policy files, no database"),
    ):
        sub = policy.add_parser(name, parents=[config], help=text)
        sub.add_argument("files", nargs="*", help=files_help)
        sub.add_argument("--model", help="model file (default: the configured model_path)")
        sub.set_defaults(func=func)
        if name == "test":
            sub.add_argument("--tables", nargs="*", default=[], help="assertion tables (default: policies/tests/*.csv)")

    explain = policy.add_parser("explain", parents=[config], help="decision and deciding line, from the live store")
    explain.add_argument("--user", required=True, help="the user's email")
    explain.add_argument("--org", required=True, help="organization slug")
    explain.add_argument("method")
    explain.add_argument("path")
    explain.set_defaults(func=cmd_explain)

    for name, func, text in (
        ("diff", cmd_diff, "what would change in the store to make it equal the files"),
        ("sync", cmd_sync, "apply the diff in one transaction (adds; removals only with --prune)"),
    ):
        sub = policy.add_parser(name, parents=[config], help=text)
        sub.add_argument("files", nargs="*", help=files_help)
        sub.add_argument(
            "--include-grants",
            action="store_true",
            help="also remove user grants (g, user:<id>, ...) that are not in the files",
        )
        sub.set_defaults(func=func)
        if name == "sync":
            sub.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
            sub.add_argument("--prune", action="store_true", help="remove stored lines that are not in the files")

    export = policy.add_parser("export", parents=[config], help="write the stored lines as CSV")
    export.add_argument("--out", default="policies-export/exported.csv", help="output file")
    export.set_defaults(func=cmd_export)
    return policy
