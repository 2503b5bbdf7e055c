"""Changes reach a replica as deltas: every writer of what the hot path holds logs what it changed in its own
transaction, and a replica applying the log ends where a full read of the final state does (decisions, roles,
keys, ended sessions, lines); a gap, a "rebuild" entry, a reconnection and the safety net rebuild in full."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.db import changes
from gateway.db.engine import bump_version, create_engine, session_factory
from gateway.db.models import Organization, PolicyRule, Session, StateChange, StateVersion, User, utcnow
from gateway.identity import accounts, sessions
from gateway.identity.passwords import PasswordHasher
from gateway.manage import keys, members, orgs, policies, users
from gateway.policy import HotState
from gateway.policy import hot as hot_module
from gateway.policy.rules import Rule
from gateway.policy.store import PolicyStore, add_rules, consistent_reads, read_state, remove_rules
from gateway.settings import Passwords
from tests.conftest import CLI, FAST_PASSWORDS, PASSWORD, load_system_policy

MODEL = Path(__file__).resolve().parents[2] / "model.conf"
PATHS = ["/api/orders/1", "/api/billing/2", "/api/reports/3", "/admin/x", "/"]
METHODS = ["GET", "POST", "DELETE"]


@dataclass
class World:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: PolicyStore
    replica: HotState
    hasher: PasswordHasher

    async def catch_up(self) -> bool:
        """Let the replica catch up as the runtime does; True when it applied deltas (no full rebuild)."""
        before = self.replica._snapshot
        assert before is not None
        full = before.built_at
        await self.replica.reload(self.store.version, self.store.state, fetch_changes=self.store.changes)
        after = self.replica._snapshot
        assert after is not None
        return after.built_at == full and after.deltas > before.deltas

    async def fresh(self) -> HotState:
        other = HotState(MODEL)
        await other.reload(self.store.version, self.store.state, force=True)
        return other


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    await load_system_policy(db_url)
    engine = create_engine(db_url)
    store = PolicyStore(session_factory(engine))
    replica = HotState(MODEL)
    await replica.reload(store.version, store.state, force=True)
    try:
        yield World(engine, store.sessions, store, replica, PasswordHasher(Passwords(**FAST_PASSWORDS)))
    finally:
        await engine.dispose()


def _same(replica: HotState, fresh: HotState, subjects: list[str], slugs: list[str]) -> None:
    """The replica answers as the fresh full build does, everywhere asked."""
    mine, theirs = replica._snapshot, fresh._snapshot
    assert mine is not None and theirs is not None
    assert mine.version == theirs.version
    assert set(mine.orgs) == set(theirs.orgs)
    assert set(mine.keys) == set(theirs.keys)
    for key_id, record in mine.keys.items():
        other = theirs.keys[key_id]
        assert (record.user_id, record.org, record.scopes, record.expires_at) == (
            other.user_id,
            other.org,
            other.scopes,
            other.expires_at,
        )
        assert (record.allowed is None) == (other.allowed is None)
    assert mine.revoked_sessions >= theirs.revoked_sessions
    assert mine.roles == theirs.roles
    assert mine.rule_count == theirs.rule_count
    assert Counter(mine.rules) == Counter(theirs.rules)
    for subject in subjects:
        for slug in slugs:
            assert replica.roles_of(subject, slug) == fresh.roles_of(subject, slug)
            assert replica.lines_for(subject, slug) == fresh.lines_for(subject, slug)
            for path in PATHS:
                for method in METHODS:
                    assert replica.decide(subject, slug, path, method) == fresh.decide(subject, slug, path, method), (
                        subject,
                        slug,
                        path,
                        method,
                    )


async def _ops(session: AsyncSession, version: int) -> list[changes.Op] | None:
    raw = await session.scalar(select(StateChange.ops).where(StateChange.version == version))
    return changes.decode(raw)


async def test_writers_log_their_changes_and_a_replica_applies_them(world: World) -> None:
    """Memberships (add, change, remove with its keys), keys (create, rotate, restrict, revoke), policy lines (add,
    remove), grants and session revocations each reach the replica as a delta, and after each one the replica
    decides as a full read of the same state does."""
    async with world.sessions() as db:
        acme = await orgs.create_org(db, CLI, slug="acme", name="Acme")
        globex = await orgs.create_org(db, CLI, slug="globex", name="Globex")
        alice = await accounts.create_user(db, world.hasher, email="alice@acme.test", password=PASSWORD)
        bob = await accounts.create_user(db, world.hasher, email="bob@acme.test", password=PASSWORD)
        await db.commit()
    assert not await world.catch_up(), "creating orgs rebuilds in full"
    subjects = ["user:" + alice.id, "user:" + bob.id, "viewer", "member"]
    slugs = ["acme", "globex"]
    fresh = await world.fresh()

    async def step(what: str) -> None:
        nonlocal fresh
        assert await world.catch_up(), f"{what}: applied as a delta"
        fresh = await world.fresh()
        _same(world.replica, fresh, subjects, slugs)

    # Warm the replica's decision cache, so stale plans would show.
    _same(world.replica, fresh, subjects, slugs)

    async with world.sessions() as db:
        await members.add_member(db, CLI, acme, role="viewer", user_id=alice.id)
        await db.commit()
    await step("member added")
    async with world.sessions() as db:
        await members.add_member(db, CLI, acme, role="member", user_id=bob.id)
        await members.add_member(db, CLI, globex, role="admin", user_id=bob.id)
        await db.commit()
    await step("two members added in one transaction")
    async with world.sessions() as db:
        await members.change_role(db, CLI, acme, alice.id, "admin")
        await db.commit()
    await step("role changed")
    async with world.sessions() as db:
        user = await db.get(User, bob.id)
        assert user is not None
        _, key_view = await keys.create_key(db, CLI, acme, user, name="ci", scopes=["GET /api/*"])
        _, other_view = await keys.create_key(db, CLI, globex, user, name="ci")
        await db.commit()
    await step("keys created")
    assert world.replica.api_key(key_view.id) is not None
    async with world.sessions() as db:
        await keys.set_allowed_ips(db, CLI, acme, key_view.id, ["10.0.0.0/8"])
        await db.commit()
    await step("key restricted")
    record = world.replica.api_key(key_view.id)
    assert record is not None and not record.accepts_from("192.0.2.1")
    async with world.sessions() as db:
        _, rotated, _ = await keys.rotate_key(db, CLI, acme, key_view.id, user_id=bob.id, grace_seconds=60)
        await db.commit()
    await step("key rotated")
    async with world.sessions() as db:
        await keys.revoke_key(db, CLI, acme, rotated.id)
        await db.commit()
    await step("key revoked")
    assert world.replica.api_key(rotated.id) is None
    async with world.sessions() as db:
        await members.remove_member(db, CLI, globex, bob.id)
        version = (await db.scalar(select(StateVersion.version))) or 0
        assert await _ops(db, version) == [
            changes.membership(bob.id, "globex", old="admin", new=None),
            changes.key_stopped(other_view.id),
        ]
        await db.commit()
    await step("member removed with their keys")
    assert world.replica.api_key(other_view.id) is None
    async with world.sessions() as db:
        await policies.add_lines(
            db,
            CLI,
            acme,
            ["p, viewer, acme, /api/reports/*, GET, allow", "p, member, acme, /api/billing/*, *, deny"],
        )
        await db.commit()
    await step("lines added")
    async with world.sessions() as db:
        line = await db.scalar(select(PolicyRule.id).where(PolicyRule.v2 == "/api/billing/*"))
        assert line is not None
        await policies.remove_line(db, CLI, acme, line)
        await db.commit()
    await step("line removed")
    async with world.sessions() as db:
        await add_rules(db, [Rule("p", ("viewer", "*", "/api/reports/:id", "POST", "allow"))], origin="api")
        await add_rules(db, [Rule("g", ("member", "viewer", "globex"))], origin="api")
        await db.commit()
    await step("a line for every org and a role link")
    async with world.sessions() as db:
        user = await db.get(User, alice.id)
        assert user is not None
        await accounts.grant_superadmin(db, user)
        await db.commit()
    await step("superadmin granted")
    assert "superadmin" in world.replica.roles_of("user:" + alice.id, "*")
    async with world.sessions() as db:
        await remove_rules(db, [Rule("g", ("user:" + alice.id, "superadmin", "*"))])
        await remove_rules(db, [Rule("g", ("member", "viewer", "globex"))])
        await db.commit()
    await step("grant and role link removed")
    async with world.sessions() as db:
        row = Session(user_id=alice.id, expires_at=utcnow() + dt.timedelta(hours=1))
        db.add(row)
        await db.flush()
        await sessions.revoke(db, alice.id, row.id)
        await db.commit()
    await step("session revoked")
    assert world.replica.session_revoked(row.id)


async def test_a_disabled_user_and_an_archived_org_stay_out(world: World) -> None:
    """Changes naming a disabled user or an archived org leave the replica as a full read would: no membership, no
    key, no line."""
    async with world.sessions() as db:
        acme = await orgs.create_org(db, CLI, slug="acme", name="Acme")
        gone = await orgs.create_org(db, CLI, slug="gone", name="Gone")
        alice = await accounts.create_user(db, world.hasher, email="alice@acme.test", password=PASSWORD)
        bob = await accounts.create_user(db, world.hasher, email="bob@acme.test", password=PASSWORD)
        await members.add_member(db, CLI, acme, role="viewer", user_id=alice.id)
        await db.commit()
    async with world.sessions() as db:
        user, archived = await db.get(User, alice.id), await db.get(Organization, gone.id)
        assert user is not None and archived is not None
        await users.set_disabled(db, CLI, user, disabled=True)
        await orgs.set_archived(db, CLI, archived, archived=True)
        await db.commit()
    assert not await world.catch_up(), "disabling and archiving rebuild in full"
    async with world.sessions() as db:
        await add_rules(db, [Rule("p", ("user:" + alice.id, "acme", "/x", "GET", "allow"))], origin="api")
        await members.change_role(db, CLI, acme, alice.id, "admin")
        archived = await db.get(Organization, gone.id)
        assert archived is not None
        await members.add_member(db, CLI, archived, role="viewer", user_id=bob.id)
        await db.commit()
    assert await world.catch_up()
    _same(world.replica, await world.fresh(), ["user:" + alice.id, "user:" + bob.id], ["acme", "gone"])
    assert world.replica.roles_of("user:" + alice.id, "acme") == ()


async def test_what_cannot_be_a_delta_rebuilds(world: World) -> None:
    """A "rebuild" entry, a gap in the log (a version bumped without an entry), `force` (a reconnection) and the
    safety net each rebuild in full, and the replica still ends where a full read does."""
    async with world.sessions() as db:
        acme = await orgs.create_org(db, CLI, slug="acme", name="Acme")
        alice = await accounts.create_user(db, world.hasher, email="alice@acme.test", password=PASSWORD)
        await db.commit()
    await world.catch_up()
    async with world.sessions() as db:
        await members.add_member(db, CLI, acme, role="viewer", user_id=alice.id)
        await bump_version(db)  # "rebuild everything"
        await db.commit()
    assert not await world.catch_up()
    async with world.sessions() as db:
        await members.change_role(db, CLI, acme, alice.id, "admin")
        version = await bump_version(db, changes.NOTHING)
        await db.execute(delete(StateChange).where(StateChange.version == version - 1))
        await db.commit()
    assert not await world.catch_up(), "a gap rebuilds"
    assert world.replica.roles_of("user:" + alice.id, "acme") == ("admin",)
    async with world.sessions() as db:
        await members.change_role(db, CLI, acme, alice.id, "viewer")
        await db.commit()
    assert await world.catch_up()
    snapshot = world.replica._snapshot
    assert snapshot is not None
    async with world.sessions() as db:
        await members.change_role(db, CLI, acme, alice.id, "member")
        await db.commit()
    snapshot.deltas = hot_module.FULL_EVERY_DELTAS
    assert not await world.catch_up(), "the safety net rebuilds"
    async with world.sessions() as db:
        await members.change_role(db, CLI, acme, alice.id, "admin")
        await db.commit()
    full = world.replica._snapshot
    await world.replica.reload(world.store.version, world.store.state, force=True, fetch_changes=world.store.changes)
    assert world.replica._snapshot is not full and world.replica._snapshot is not None
    assert world.replica._snapshot.deltas == 0, "force rebuilds"
    _same(world.replica, await world.fresh(), ["user:" + alice.id], ["acme"])


async def test_the_state_read_is_one_snapshot(world: World) -> None:
    """The full read's version is the version of the rows it read, even while another transaction commits in
    between (the reads are one database snapshot)."""
    async with world.sessions() as db:
        await orgs.create_org(db, CLI, slug="acme", name="Acme")
        await db.commit()
    async with world.sessions() as reader:
        await consistent_reads(reader)
        first = await reader.scalar(select(StateVersion.version))
        async with world.sessions() as writer:
            await orgs.create_org(writer, CLI, slug="later", name="Later")
            await writer.commit()
        state = await read_state(reader)
    assert state.version == first
    assert "later" not in {org.slug for org in state.orgs}
    async with world.sessions() as db:
        assert await db.scalar(select(Organization.id).where(Organization.slug == "later")) is not None
