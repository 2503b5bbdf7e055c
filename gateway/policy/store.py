"""The database side of the policy: read everything the engine needs, add lines idempotently.

Stored `p`/`g` lines come from `policy_rules`; membership `g` lines are derived from `memberships`, so the
membership table is the single source of truth for who holds which role in which org.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db import changes
from gateway.db.engine import bump_version, create_engine, read_version, session_factory
from gateway.db.models import (
    ApiKey,
    ExternalIdentity,
    Membership,
    Organization,
    PolicyRule,
    Session,
    ShadowDifference,
    ShadowPolicy,
    StateChange,
    User,
    utcnow,
)
from gateway.policy.delta import Change, ChangeRun, KeyChange, LineChange, MemberChange, SessionRevoked
from gateway.policy.hot import AllowList, KeyRecord, OrgRef, StateRows
from gateway.policy.rules import Rule
from gateway.policy.shadow import Difference, Key, ShadowSpec, Tally

MAX_ACCESS_TTL = 3600
CHUNK = 2000
SYSTEM_ORIGIN = "system"
"""Origin of the shipped system roles' lines."""


def _columns(rule: Rule) -> dict[str, str]:
    values = list(rule.values) + [""] * (6 - len(rule.values))
    return {"ptype": rule.ptype, **{f"v{i}": value for i, value in enumerate(values)}}


BATCH_ROWS = 10_000
"""Lines handed to the database driver at a time (SQLAlchemy splits them into statements within its limits)."""
DELETE_ROWS = 500 if sqlite3.sqlite_version_info >= (3, 32) else 999 // 7
"""Lines per DELETE (a row-value IN list; PostgreSQL plans a long one as deep recursion; SQLite before 3.32
takes at most 999 values a statement)."""
_COLUMNS = (PolicyRule.ptype, PolicyRule.v0, PolicyRule.v1, PolicyRule.v2, PolicyRule.v3, PolicyRule.v4, PolicyRule.v5)


def _row_rule(ptype: str, *values: str) -> Rule:
    return Rule(ptype, values[: 5 if ptype == "p" else 3])


async def _rows(session: AsyncSession, query: Any) -> AsyncIterator[Sequence[Any]]:
    """Rows in chunks, yielding to the event loop between them: a reload of hundreds of thousands of rows
    must not stall the requests being served meanwhile."""
    result = await session.stream(query.execution_options(yield_per=CHUNK))
    async for chunk in result.partitions(CHUNK):
        yield chunk
        await asyncio.sleep(0)


async def read_state(session: AsyncSession) -> StateRows:
    """One consistent read of rules, memberships and orgs (the version is read first: a concurrent write
    makes the next poll reload again rather than hide a change)."""
    version = await read_version(session)
    disabled = {"user:" + user_id for user_id in await session.scalars(select(User.id).where(User.disabled))}
    rules: list[Rule] = []
    async for chunk in _rows(session, select(*_COLUMNS).order_by(PolicyRule.id)):
        for row in chunk:
            rule = _row_rule(*row)
            if rule.values[0] not in disabled:  # a disabled user keeps no grant, not even a global one
                rules.append(rule)
    memberships_from = len(rules)
    # An archived org leaves the snapshot entirely: unknown to the hot path, its members and keys are denied.
    live = Organization.archived_at.is_(None)
    memberships = (
        select(Membership.user_id, Organization.slug, Membership.role)
        .join(Organization, Organization.id == Membership.org_id)
        .join(User, User.id == Membership.user_id)
        .where(User.disabled.is_(False), live)
    )
    async for chunk in _rows(session, memberships):
        rules.extend(Rule("g", ("user:" + user_id, role, slug)) for user_id, slug, role in chunk)
    orgs: list[OrgRef] = []
    async for chunk in _rows(session, select(Organization.id, Organization.slug).where(live)):
        orgs.extend(OrgRef(id=org_id, slug=slug) for org_id, slug in chunk)
    # A key works only while its owner is enabled and still a member of the key's org (re-adding a removed
    # member does not revive their old keys: removal revokes them, see manage.members).
    keys = await session.execute(
        select(
            ApiKey.id,
            ApiKey.key_hash,
            ApiKey.user_id,
            Organization.slug,
            ApiKey.scopes,
            ApiKey.expires_at,
            ApiKey.allowed_ips,
        )
        .join(Organization, Organization.id == ApiKey.org_id)
        .join(User, User.id == ApiKey.user_id)
        .join(Membership, (Membership.user_id == ApiKey.user_id) & (Membership.org_id == ApiKey.org_id))
        .where(ApiKey.revoked_at.is_(None), User.disabled.is_(False), live)
    )
    records = tuple(
        KeyRecord(
            key_id=key_id,
            key_hash=digest,
            user_id=user_id,
            org=slug,
            scopes=parse_scopes(scopes),
            expires_at=expires.timestamp() if expires else None,
            allowed=parse_allow_list(allowed),
        )
        for key_id, digest, user_id, slug, scopes, expires, allowed in keys
    )
    # Access tokens live at most an hour (tokens.access_ttl_seconds is capped there) and session cookies no longer
    # than their session: a revocation matters while either may still be unexpired.
    now = utcnow()
    recent = now - dt.timedelta(seconds=MAX_ACCESS_TTL)
    revoked = frozenset(
        await session.scalars(
            select(Session.id).where(
                Session.revoked_at.is_not(None), (Session.revoked_at > recent) | (Session.expires_at > now)
            )
        )
    )
    shadow = await read_shadow(session, disabled)
    # Outside identities linked to users, for outside access tokens ([[trusted_issuers]] link_provider). A link or
    # an unlink bumps the version without a delta (no operation describes it), so replicas rebuild and see it.
    links: list[tuple[str, str, str]] = []
    identities = select(ExternalIdentity.provider, ExternalIdentity.subject, ExternalIdentity.user_id)
    async for chunk in _rows(session, identities):
        links.extend((provider, subject, user_id) for provider, subject, user_id in chunk)
    return StateRows(
        rules=tuple(rules),
        orgs=tuple(orgs),
        version=version,
        keys=records,
        revoked_sessions=revoked,
        shadow=shadow,
        disabled=frozenset(disabled),
        links=tuple(links),
        memberships_from=memberships_from,
    )


MAX_RUN = 1_000
"""State versions applied as deltas at once; a replica further behind rebuilds."""


async def read_changes(session: AsyncSession, after: int) -> ChangeRun | None:
    """The changes of the versions after `after`, if every one of them is in the change log (none missing, none
    saying "rebuild everything", at most MAX_RUN); None otherwise (then the caller rebuilds from the tables)."""
    rows = (
        await session.execute(
            select(StateChange.version, StateChange.ops)
            .where(StateChange.version > after)
            .order_by(StateChange.version)
            .limit(MAX_RUN + 1)
        )
    ).all()
    if not rows or len(rows) > MAX_RUN:
        return None
    run: list[Change] = []
    for expected, (version, raw) in enumerate(rows, start=after + 1):
        ops = changes.decode(raw)
        if version != expected or ops is None:
            return None
        for op in ops:
            change = _change(op)
            if change is None:
                return None
            run.append(change)
    return ChangeRun(version=int(rows[-1][0]), changes=tuple(run))


def _change(op: changes.Op) -> Change | None:
    """One operation of the change log as a change to a snapshot; None for one this version does not know."""
    kind, args = op[0], op[1:]
    if kind in ("line+", "line-") and args:
        return LineChange(_row_rule(*args), added=kind == "line+")
    if kind == "member" and len(args) == 4:
        user_id, org, old, new = args
        return MemberChange("user:" + user_id, org, old or None, new or None)
    if kind == "key-" and len(args) == 1:
        return KeyChange(args[0], None)
    if kind == "key" and len(args) == 7:
        key_id, digest, user_id, org, scopes, expires, allowed = args
        record = KeyRecord(
            key_id=key_id,
            key_hash=digest,
            user_id=user_id,
            org=org,
            scopes=parse_scopes(scopes),
            expires_at=dt.datetime.fromisoformat(expires).timestamp() if expires else None,
            allowed=parse_allow_list(allowed),
        )
        return KeyChange(key_id, record)
    if kind == "session-" and len(args) == 1:
        return SessionRevoked(args[0])
    return None


def lines_of_json(raw: str) -> list[Rule]:
    """Lines stored as a JSON list of value lists (`[["p", "viewer", ...], ...]`)."""
    return [Rule(values[0], tuple(values[1:])) for values in json.loads(raw)]


async def read_shadow(session: AsyncSession, disabled: Collection[str] = ()) -> ShadowSpec | None:
    """The active shadow policy as changes to the stored lines; a whole file set becomes the difference from
    the stored policy-file lines. Lines naming a disabled user are left out, as they are from the live policy."""
    row = await session.scalar(select(ShadowPolicy).where(ShadowPolicy.status == "active"))
    if row is None:
        return None
    add, remove = lines_of_json(row.add_lines), lines_of_json(row.remove_lines)
    if row.files is not None:
        wanted = lines_of_json(row.files)
        stored = await stored_rules(session, origin="file")
        add, remove = diff_rules(wanted, stored, include_grants=True)
        present = set(await stored_rules(session))  # a line stored already (the system roles, the API's) adds nothing
        add = [rule for rule in add if rule not in present]
    usable = [rule for rule in add if rule.values[0] not in disabled]
    return ShadowSpec(row.id, row.name, tuple(usable), frozenset(remove))


def parse_scopes(raw: str) -> tuple[tuple[str, str], ...]:
    """Stored scopes (a JSON list of "METHOD /pattern") as pairs."""
    pairs = (str(scope).split(" ", 1) for scope in json.loads(raw))
    return tuple((method, pattern) for method, pattern in pairs)


def parse_allow_list(raw: str) -> AllowList | None:
    """A key's stored `allowed_ips` (a JSON list of addresses and networks, normalised when stored); None when
    empty (from anywhere)."""
    entries = json.loads(raw)
    return AllowList(ipaddress.ip_network(entry) for entry in entries) if entries else None


async def add_rules(session: AsyncSession, rules: Iterable[Rule], *, origin: str = "file") -> int:
    """Insert lines that are not stored yet, in the caller's transaction; return how many were new.
    `origin` is `file` for policy files, `api` for the admin API and `system` for the shipped system roles
    (`gateway migrate` writes those; sync never removes api or system lines)."""
    rows = [{**_columns(rule), "origin": origin} for rule in dict.fromkeys(rules)]
    if not rows:
        return 0
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # One statement, executed for many rows: SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues", a few
    # hundred round trips for 300,000 lines, compiled once); the unique constraint drops what is already stored,
    # and RETURNING counts what was not.
    statement = insert(PolicyRule).on_conflict_do_nothing()
    new: list[changes.Op] = []
    if session.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        for row in rows:  # no RETURNING before SQLite 3.35: one statement a line, counted by rowcount
            if (await session.execute(statement.values(**row))).rowcount:  # type: ignore[attr-defined]
                new.append(_added_op(row))
    else:
        stored: list[tuple[int, Rule]] = []
        for start in range(0, len(rows), BATCH_ROWS):
            result = await session.execute(
                statement.returning(PolicyRule.id, *_COLUMNS), rows[start : start + BATCH_ROWS]
            )
            stored.extend((row[0], _row_rule(*row[1:])) for row in result)
        # In id order, the order a full read lists them in (RETURNING promises no order of its own).
        new.extend(changes.line_added(rule.ptype, rule.values) for _, rule in sorted(stored, key=lambda pair: pair[0]))
    if new:
        await bump_version(session, new)
    return len(new)


def _added_op(row: dict[str, str]) -> changes.Op:
    rule = _row_rule(*(row[name] for name in ("ptype", "v0", "v1", "v2", "v3", "v4", "v5")))
    return changes.line_added(rule.ptype, rule.values)


async def delete_lines(session: AsyncSession, where: Any) -> int:
    """Delete the stored lines matching `where`, in the caller's transaction, and bump the version saying which;
    return how many."""
    statement = delete(PolicyRule).where(where)
    if not session.get_bind().dialect.delete_returning:  # SQLite before 3.35: replicas rebuild
        removed = (await session.execute(statement)).rowcount or 0  # type: ignore[attr-defined]
        if removed:
            await bump_version(session)
        return int(removed)
    gone = [_row_rule(*row) for row in await session.execute(statement.returning(*_COLUMNS))]
    if gone:
        await bump_version(session, [changes.line_removed(rule.ptype, rule.values) for rule in gone])
    return len(gone)


def is_grant(rule: Rule) -> bool:
    """A `g` line binding a user (e.g. a superadmin grant): owned by the management side, not by policy files."""
    return rule.ptype == "g" and rule.values[0].startswith("user:")


async def stored_rules(session: AsyncSession, *, origin: str | None = None) -> list[Rule]:
    """The lines in `policy_rules` (of one origin, or all), in insertion order (memberships are not among them)."""
    # Plain rows, not ORM objects: a reload reads every line, and materialising objects runs on the event loop.
    query = select(*_COLUMNS).order_by(PolicyRule.id)
    if origin is not None:
        query = query.where(PolicyRule.origin == origin)
    rows = await session.execute(query)
    return [_row_rule(*row) for row in rows]


def diff_rules(files: list[Rule], stored: list[Rule], *, include_grants: bool) -> tuple[list[Rule], list[Rule]]:
    """(lines to add, lines to remove) to make the store equal the files. User grants are never removed
    unless `include_grants`."""
    in_files, in_store = set(files), set(stored)
    added = list(dict.fromkeys(rule for rule in files if rule not in in_store))
    removed = [rule for rule in stored if rule not in in_files and (include_grants or not is_grant(rule))]
    return added, removed


async def remove_rules(session: AsyncSession, rules: Iterable[Rule]) -> int:
    """Delete exactly these lines (each matched on every column), in the caller's transaction."""
    keys = [tuple(_columns(rule).values()) for rule in dict.fromkeys(rules)]
    returning = session.get_bind().dialect.delete_returning
    removed = 0
    gone: list[changes.Op] = []
    for start in range(0, len(keys), DELETE_ROWS):
        chosen = keys[start : start + DELETE_ROWS]
        statement = delete(PolicyRule).where(tuple_(*_COLUMNS).in_(chosen))
        if returning:
            rows = (await session.execute(statement.returning(*_COLUMNS))).all()
            gone.extend(changes.line_removed(row[0], _row_rule(*row).values) for row in rows)
            removed += len(rows)
        else:
            result = await session.execute(statement)
            removed += result.rowcount or 0  # type: ignore[attr-defined]
    if removed:
        await bump_version(session, gone if returning else changes.FULL)
    return removed


async def install_system(session: AsyncSession, shipped: list[Rule]) -> int:
    """Make the lines of origin `system` exactly `shipped` (the package's system roles), in the caller's
    transaction; a shipped line already stored from a policy file becomes a system line (so `policy sync
    --prune` never removes it). Returns how many lines changed."""
    wanted = set(shipped)
    stored = await session.execute(select(PolicyRule.id, *_COLUMNS).where(PolicyRule.origin == SYSTEM_ORIGIN))
    stale = [row[0] for row in stored if _row_rule(*row[1:]) not in wanted]
    if stale:
        await session.execute(delete(PolicyRule).where(PolicyRule.id.in_(stale)))
    claimed = 0
    for rule in shipped:
        columns = _columns(rule)
        result = await session.execute(
            update(PolicyRule)
            .where(
                PolicyRule.origin == "file", *(getattr(PolicyRule, name) == value for name, value in columns.items())
            )
            .values(origin=SYSTEM_ORIGIN)
        )
        claimed += result.rowcount or 0  # type: ignore[attr-defined]
    if stale or claimed:
        await bump_version(session)
    return len(stale) + claimed + await add_rules(session, shipped, origin=SYSTEM_ORIGIN)


class PolicyStore:
    """Binds the engine's reload to a database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    async def version(self) -> int:
        async with self._sessions() as session:
            return await read_version(session)

    async def state(self) -> StateRows:
        async with self._sessions() as session:
            await consistent_reads(session)
            return await read_state(session)

    async def changes(self, after: int) -> ChangeRun | None:
        async with self._sessions() as session:
            return await read_changes(session, after)


async def consistent_reads(session: AsyncSession) -> None:
    """Make the session's reads one snapshot of the database (its first read fixes it), so the version read with
    them is exactly the version of what they return: the changes after it are then the ones to apply, no more,
    no fewer. PostgreSQL: REPEATABLE READ. SQLite: an explicit read transaction (the driver begins none for
    reads; in WAL mode one sees the database as of its first read)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        await session.execute(text("BEGIN"))


async def install_system_policy(database_url: str) -> int:
    """Store the shipped system roles (`install_system`) under the migration lock; return how many lines changed."""
    from gateway.db.migrate import MIGRATION_LOCK
    from gateway.policy.rules import parse_files
    from gateway.settings import SHIPPED_POLICY

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            if session.get_bind().dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            changed = await install_system(session, parse_files([SHIPPED_POLICY]))
            await session.commit()
            return changed
    finally:
        await engine.dispose()


def migrate(database_url: str) -> None:
    """`gateway migrate`: the schema (Alembic, under an advisory lock on PostgreSQL), then the shipped system
    roles, so a fresh database serves them at once. Safe to run again, and by several processes at once."""
    from gateway.db.migrate import upgrade

    upgrade(database_url)
    asyncio.run(install_system_policy(database_url))


def _rule_text(rule: tuple[str, ...]) -> str:
    return ", ".join(("p", *rule)) if rule else ""


async def write_tally(sessions: async_sessionmaker[AsyncSession], tally: Tally) -> None:
    """Add what this process counted since the last call to the shadow's totals in the database (one short
    transaction; replicas add to the same rows, and a row two of them create at once is retried as an update).
    Counts of a shadow that has ended meanwhile are dropped."""
    compared, pending = tally.drain()
    if not compared and not pending:
        return
    for attempt in (1, 2):
        try:
            async with sessions() as session:
                await _add_tally(session, tally.shadow_id, compared, pending)
                await session.commit()
            return
        except IntegrityError:
            if attempt == 2:
                raise


async def _add_tally(session: AsyncSession, shadow_id: int, compared: int, pending: dict[Key, Difference]) -> None:
    shadow = await session.get(ShadowPolicy, shadow_id)
    if shadow is None or shadow.status != "active":
        return
    await session.execute(
        update(ShadowPolicy).where(ShadowPolicy.id == shadow_id).values(compared=ShadowPolicy.compared + compared)
    )
    for (route, org, live_allowed, other_allowed, live_rule, other_rule), seen in pending.items():
        key = hashlib.sha256(json.dumps([route, org, live_allowed, other_allowed, live_rule, other_rule]).encode())
        counted = await session.execute(
            update(ShadowDifference)
            .where(ShadowDifference.shadow_id == shadow_id, ShadowDifference.key_hash == key.hexdigest())
            .values(
                count=ShadowDifference.count + seen.count,
                last_seen=dt.datetime.fromtimestamp(seen.last_seen, dt.UTC),
            )
        )
        if counted.rowcount:  # type: ignore[attr-defined]
            continue
        session.add(
            ShadowDifference(
                shadow_id=shadow_id,
                key_hash=key.hexdigest(),
                route=route[:255],
                org=org,
                live_allowed=live_allowed,
                shadow_allowed=other_allowed,
                live_rule=_rule_text(live_rule),
                shadow_rule=_rule_text(other_rule),
                count=seen.count,
                sample_subject=seen.subject[:200],
                sample_path=seen.path,
                sample_method=seen.method,
                first_seen=dt.datetime.fromtimestamp(seen.first_seen, dt.UTC),
                last_seen=dt.datetime.fromtimestamp(seen.last_seen, dt.UTC),
            )
        )
