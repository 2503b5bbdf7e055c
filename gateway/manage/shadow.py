"""Shadow policies, platform-wide: attach a candidate (line changes, or a whole set of policy-file lines) that
every proxied request is also decided by, read the report of where it would decide otherwise, then promote it
to live in one step or drop it. All audited; at most one is attached at a time."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import bump_version
from gateway.db.models import ShadowDifference, ShadowPolicy, utcnow
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.manage import versions
from gateway.manage.common import Actor, record
from gateway.manage.ownership import owners_guarded
from gateway.manage.roles import SUPERADMIN
from gateway.policy import rules, store
from gateway.policy.rules import Rule

MAX_LINES = 100_000
REPORT_ROWS = 200


@dataclass(frozen=True, slots=True)
class DifferenceView:
    route: str
    org: str
    live_allowed: bool
    shadow_allowed: bool
    live_rule: str
    """The live deciding line (empty: nothing matched, denied by default)."""
    shadow_rule: str
    count: int
    sample: dict[str, str]
    """One request of this kind: subject, path, method."""
    first_seen: dt.datetime
    last_seen: dt.datetime


@dataclass(frozen=True, slots=True)
class ShadowReport:
    id: int
    name: str
    status: str
    created_by: str
    created_at: dt.datetime
    mode: str
    """`changes` (add/remove) or `files` (a whole set of policy-file lines)."""
    add: list[str]
    """Lines the candidate adds to the live ones (for a file set: those not in the stored file lines)."""
    remove: list[str]
    compared: int
    """Proxied requests decided by both, as the processes last reported (every few seconds)."""
    would_deny: int
    would_allow: int
    differences: list[DifferenceView]
    """The most frequent differences first (at most 200)."""


def _parse(lines: Sequence[str], field: str) -> list[Rule]:
    if len(lines) > MAX_LINES:
        raise Unprocessable(f"{field}: at most {MAX_LINES} lines")
    parsed = []
    for index, raw in enumerate(lines):
        try:
            rule = rules.parse_line(raw)
        except rules.PolicyError as exc:
            raise Unprocessable(f"{field}[{index}]: {exc}") from None
        if rule is not None:
            parsed.append(rule)
    return parsed


def _dump(parsed: list[Rule]) -> str:
    return json.dumps([[rule.ptype, *rule.values] for rule in parsed])


async def active(session: AsyncSession) -> ShadowPolicy | None:
    return await session.scalar(select(ShadowPolicy).where(ShadowPolicy.status == "active"))


async def attach(
    session: AsyncSession,
    actor: Actor,
    *,
    name: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    files: Sequence[str] | None = None,
) -> ShadowReport:
    """Attach a candidate: `add`/`remove` lines against the live policy, or `files`, every line the policy files
    would hold (comments and blank lines allowed). Decides nothing; 409 while another is attached."""
    if not name.strip() or len(name) > 100:
        raise Unprocessable("name: 1-100 characters")
    if files is not None and (add or remove):
        raise Unprocessable("files: give either files or add/remove lines")
    added, removed = _parse(add, "add"), _parse(remove, "remove")
    whole = _parse(files, "files") if files is not None else None
    if whole is None and not added and not removed:
        raise Unprocessable("add: give lines to add or remove, or files")
    for field, lines in (("add", added), ("files", whole or [])):
        for index, rule in enumerate(lines):  # the rule of global lines: superadmin is granted to users only
            if rule.ptype == "g" and rule.values[1] == SUPERADMIN and not rule.values[0].startswith("user:"):
                raise Unprocessable(f"{field}[{index}]: role: a role cannot inherit superadmin; grant it to users")
    if await active(session) is not None:
        raise Conflict("shadow: a shadow policy is attached already; promote or drop it first")
    row = ShadowPolicy(
        name=name.strip(),
        created_by=actor.subject,
        created_at=utcnow(),
        add_lines=_dump(added),
        remove_lines=_dump(removed),
        files=_dump(whole) if whole is not None else None,
        status="active",
        compared=0,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:  # another attach won the race (one active shadow: a partial unique index)
        raise Conflict("shadow: a shadow policy is attached already; promote or drop it first") from None
    await bump_version(session)
    record(
        session,
        actor,
        "shadow.attach",
        org=None,
        target=str(row.id),
        after={"name": row.name, "add": len(added), "remove": len(removed), "files": len(whole or ())},
    )
    return await report(session, row)


async def report(session: AsyncSession, row: ShadowPolicy | None = None) -> ShadowReport:
    """The attached shadow (or `row`) with its differences; 404 when none is attached."""
    row = row or await active(session)
    if row is None:
        raise NotFound("shadow: no shadow policy is attached")
    spec = await store.read_shadow(session) if row.status == "active" else None
    if spec is not None:  # what it changes now (a file set, against the stored file lines)
        add, remove = list(spec.add), sorted(spec.remove, key=lambda rule: rule.csv())
    else:
        add, remove = store.lines_of_json(row.add_lines), store.lines_of_json(row.remove_lines)
    found = list(
        await session.scalars(
            select(ShadowDifference)
            .where(ShadowDifference.shadow_id == row.id)
            .order_by(ShadowDifference.count.desc(), ShadowDifference.id)
        )
    )
    differences = [
        DifferenceView(
            route=d.route,
            org=d.org,
            live_allowed=d.live_allowed,
            shadow_allowed=d.shadow_allowed,
            live_rule=d.live_rule,
            shadow_rule=d.shadow_rule,
            count=d.count,
            sample={"subject": d.sample_subject, "path": d.sample_path, "method": d.sample_method},
            first_seen=d.first_seen,
            last_seen=d.last_seen,
        )
        for d in found
    ]
    return ShadowReport(
        id=row.id,
        name=row.name,
        status=row.status,
        created_by=row.created_by,
        created_at=row.created_at,
        mode="files" if row.files is not None else "changes",
        add=[rule.csv() for rule in add],
        remove=[rule.csv() for rule in remove],
        compared=row.compared,
        would_deny=sum(d.count for d in found if d.live_allowed and not d.shadow_allowed),
        would_allow=sum(d.count for d in found if not d.live_allowed and d.shadow_allowed),
        differences=differences[:REPORT_ROWS],
    )


async def promote(session: AsyncSession, actor: Actor) -> ShadowReport:
    """Make the attached candidate the live policy in one transaction: its changes are applied to the stored
    lines (a file set replaces the lines of origin `file`, as `policy sync --prune` would), every org whose
    lines change gets a new version, and the shadow ends as `promoted`."""
    row = await active(session)
    if row is None:
        raise NotFound("shadow: no shadow policy is attached")
    spec = await store.read_shadow(session)
    assert spec is not None  # the row is active
    origin = "file" if row.files is not None else "api"
    add, remove = list(spec.add), sorted(spec.remove, key=lambda rule: rule.csv())
    touched = await versions.orgs_named(session, [*add, *remove])
    async with contextlib.AsyncExitStack() as guards:
        await guards.enter_async_context(versions.tracked(session, actor, touched, "shadow.promote"))
        for org in touched:  # no org is left without an owner, as with any other change to its lines
            await guards.enter_async_context(owners_guarded(session, actor, org))
        await store.add_rules(session, add, origin=origin)
        await store.remove_rules(session, remove)
    row.status, row.ended_at = "promoted", utcnow()
    await bump_version(session)
    record(
        session,
        actor,
        "shadow.promote",
        org=None,
        target=str(row.id),
        after={"name": row.name, "added": [r.csv() for r in add], "removed": [r.csv() for r in remove]},
    )
    return await report(session, row)


async def drop(session: AsyncSession, actor: Actor) -> None:
    """Detach the candidate: the live policy was never touched, and nothing is counted any more."""
    row = await active(session)
    if row is None:
        raise NotFound("shadow: no shadow policy is attached")
    row.status, row.ended_at = "dropped", utcnow()
    await bump_version(session)
    record(session, actor, "shadow.drop", org=None, target=str(row.id), before={"name": row.name})
