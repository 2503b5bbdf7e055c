"""Raw policy lines through the API: an org's own lines, and (superadmins) global ones, validated first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import Membership, Organization, PolicyRule
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.manage import versions
from gateway.manage.common import Actor, Page, fetch_page, lock_org, record
from gateway.manage.ownership import owners_guarded
from gateway.manage.roles import SUPERADMIN, check_delegation, check_inheritance, custom_role, require_role
from gateway.policy import rules, store
from gateway.policy.rules import ANY_DOMAIN, EXTERNAL_SUBJECT_RE, USER_SUBJECT_RE, Rule

MAX_LINES = 1000


@dataclass(frozen=True, slots=True)
class LineView:
    id: int
    line: str
    origin: str


def _view(row: PolicyRule) -> LineView:
    values = [row.v0, row.v1, row.v2, row.v3, row.v4, row.v5][: 5 if row.ptype == "p" else 3]
    return LineView(row.id, ", ".join((row.ptype, *values)), row.origin)


async def list_lines(
    session: AsyncSession, org: Organization | None, *, cursor: str | None, limit: int
) -> Page[LineView]:
    query = select(PolicyRule)
    if org is not None:
        query = query.where(versions.of_org(org.slug))
    page = await fetch_page(session, query, PolicyRule.id, cursor=cursor, limit=limit, key_of=lambda r: r.id)
    return Page([_view(row) for row in page.items], page.next_cursor)


def _parse(lines: Sequence[str | list[str]]) -> list[Rule]:
    """CSV text (`"p, viewer, acme, /x, GET"`, trimmed as Casbin trims) or a list of values
    (`["p", "viewer", "acme", "/x", "GET"]`, taken exactly: commas or surrounding whitespace are refused)."""
    if not lines:
        raise Unprocessable("lines: give at least one line")
    if len(lines) > MAX_LINES:
        raise Unprocessable(f"lines: at most {MAX_LINES} per request")
    parsed = []
    for index, raw in enumerate(lines):
        try:
            if isinstance(raw, list):
                if not raw:
                    raise rules.PolicyError("ptype: missing")
                rule: Rule | None = rules.validate(raw[0], tuple(raw[1:]))
            else:
                rule = rules.parse_line(raw)
        except rules.PolicyError as exc:
            raise Unprocessable(f"lines[{index}]: {exc}") from None
        if rule is None:
            raise Unprocessable(f"lines[{index}]: empty or a comment")
        parsed.append(rule)
    return parsed


async def _check_org_line(session: AsyncSession, actor: Actor, org: Organization, rule: Rule, field: str) -> None:
    """An org's own lines stay inside the org: its domain, proxied paths, its roles and members."""
    domain = rule.values[1] if rule.ptype == "p" else rule.values[2]
    if domain != org.slug:
        raise Unprocessable(f"{field}: org {domain!r}: an org's lines must name {org.slug!r} (not '*' or another org)")
    subject = rule.values[0]
    if rule.ptype == "p":
        if rules.is_admin_pattern(rule.values[2]):
            raise Unprocessable(f"{field}: path {rule.values[2]!r}: org lines grant proxied paths ('/...') only")
        if USER_SUBJECT_RE.match(subject):
            member = await session.get(Membership, (subject.removeprefix("user:"), org.id))
            if member is None:
                raise Unprocessable(f"{field}: subject {subject!r} is not a member of this organization")
        elif EXTERNAL_SUBJECT_RE.match(subject):
            pass  # an outside caller ([[trusted_issuers]]): the line's domain keeps it inside this org
        else:
            await require_role(session, org, subject, f"{field}: subject")
        return
    if USER_SUBJECT_RE.match(subject):
        raise Unprocessable(f"{field}: subject {subject!r}: give users roles through /members, not g lines")
    if EXTERNAL_SUBJECT_RE.match(subject):
        raise Unprocessable(f"{field}: subject {subject!r}: an org's lines grant outside subjects paths (p lines) only")
    await require_role(session, org, subject, f"{field}: subject")
    await check_inheritance(session, actor, org, subject, [rule.values[1]], f"{field}: role", adding=True)


async def add_lines(
    session: AsyncSession, actor: Actor, org: Organization | None, lines: Sequence[str | list[str]]
) -> list[LineView]:
    """Store the lines (all or none); lines already stored are kept as they are. Global lines (`org` None) may
    name any domain and admin objects, but never grant superadmin to a role."""
    parsed = _parse(lines)
    if org is not None:
        await lock_org(session, org)
    for index, rule in enumerate(parsed):
        if org is not None:
            await _check_org_line(session, actor, org, rule, f"lines[{index}]")
        elif rule.ptype == "g" and rule.values[1] == SUPERADMIN and not rule.values[0].startswith("user:"):
            raise Unprocessable(f"lines[{index}]: role: a role cannot inherit superadmin; grant it to users")
    touched = [org] if org is not None else await versions.orgs_named(session, parsed)
    async with versions.tracked(session, actor, touched, "policy.add"):
        if org is not None:
            async with owners_guarded(session, actor, org):  # a `g` line may make a role, and its holders, owners
                await store.add_rules(session, parsed, origin="api")
        else:
            await store.add_rules(session, parsed, origin="api")
    await bump_version(session, changes.NOTHING)  # add_rules said what it added
    stored = []
    for rule in parsed:
        values = list(rule.values) + [""] * (6 - len(rule.values))
        row = await session.scalar(
            select(PolicyRule).where(
                PolicyRule.ptype == rule.ptype, *(getattr(PolicyRule, f"v{i}") == v for i, v in enumerate(values))
            )
        )
        if row is not None:
            stored.append(_view(row))
    record(
        session,
        actor,
        "policy.add",
        org=org.slug if org else None,
        target=org.slug if org else ANY_DOMAIN,
        after=[line.line for line in stored],
    )
    return stored


async def remove_line(session: AsyncSession, actor: Actor, org: Organization | None, line_id: int) -> None:
    """Remove one line by id. Lines from policy files are refused: `policy sync` would bring them back."""
    row = await session.get(PolicyRule, line_id)
    if row is None or (org is not None and not _in_org(row, org.slug)):
        raise NotFound("line: no such policy line")
    if row.origin != "api":
        raise Conflict("line: this line comes from the policy files; change the files and run `policy sync`")
    before = _view(row).line
    rule = Rule(row.ptype, versions.values_of(row)[1:])
    touched = [org] if org is not None else await versions.orgs_named(session, [rule])
    async with versions.tracked(session, actor, touched, "policy.remove"):
        if org is not None:
            await lock_org(session, org)
            async with owners_guarded(session, actor, org):  # removing a `g` line may take owner from its holders
                await session.execute(delete(PolicyRule).where(PolicyRule.id == line_id))
        else:
            await session.execute(delete(PolicyRule).where(PolicyRule.id == line_id))
    await bump_version(session, [changes.line_removed(rule.ptype, rule.values)])
    record(session, actor, "policy.remove", org=org.slug if org else None, target=str(line_id), before=before)


def _in_org(row: PolicyRule, slug: str) -> bool:
    if row.ptype == "p":
        return row.v1 == slug
    return row.v2 == slug and not row.v0.startswith("user:")


async def rollback(session: AsyncSession, actor: Actor, org: Organization, number: int) -> versions.VersionDiff:
    """Make the org's lines those of version `number` again; the answer is the new version and what it changed
    (when the lines are already those, no version is written and the answer names the latest). Lines that came from
    the policy files are not the API's to remove (409: change the files); lines to bring back are checked as
    new ones are (their roles and members must still exist here), and come back as API lines."""
    await lock_org(session, org)
    target = {line[1:] for line in versions.lines_of(await versions.find(session, org, number))}
    present = {line[1:]: line[0] for line in await versions.current(session, org.slug)}
    from_files = sorted(values for values, origin in present.items() if values not in target and origin != "api")
    if from_files:
        shown = "; ".join(", ".join(values) for values in from_files[:5])
        raise Conflict(f"version: these lines come from the policy files; change the files and sync: {shown}")
    restore = [Rule(values[0], values[1:]) for values in sorted(target - set(present))]
    drop = [Rule(values[0], values[1:]) for values in sorted(set(present) - target)]
    for rule in restore:
        try:
            if rule.ptype == "p" and rules.is_admin_pattern(rule.values[2]):
                # A custom role's delegated management action (written through /roles, never /policies).
                if await custom_role(session, org, rule.values[0]) is None:
                    raise Unprocessable("only a custom role of this organization holds management actions")
                check_delegation(org, 0, rule.values[2], [rule.values[3]])
            else:
                await _check_org_line(session, actor, org, rule, f"version {number}: {rule.csv()}")
        except Unprocessable as exc:
            raise Conflict(f"version {number}: {rule.csv()}: {exc.detail}") from None
    async with versions.tracked(session, actor, [org], "policy.rollback"), owners_guarded(session, actor, org):
        await store.add_rules(session, restore, origin="api")
        await store.remove_rules(session, drop)
    await bump_version(session, changes.NOTHING)  # add_rules and remove_rules said what they changed
    record(
        session,
        actor,
        "policy.rollback",
        org=org.slug,
        target=str(number),
        after={"added": [rule.csv() for rule in restore], "removed": [rule.csv() for rule in drop]},
    )
    latest = await versions.latest_number(session, org)
    return versions.VersionDiff(None if latest == 1 else latest - 1, latest, *versions.texts(restore, drop))
