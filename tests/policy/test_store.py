"""The policy store writes many lines in batches: counts stay exact across batch edges, duplicates in the input
and lines already stored are added once, and removal matches every column."""

from __future__ import annotations

import secrets

from gateway.db.engine import bump_version, create_engine, read_version, session_factory
from gateway.db.models import ExternalIdentity, User
from gateway.policy import HotState
from gateway.policy.rules import Rule
from gateway.policy.store import (
    BATCH_ROWS,
    DELETE_ROWS,
    add_rules,
    read_changes,
    read_state,
    remove_rules,
    stored_rules,
)
from tests.conftest import ROOT


async def test_bulk_add_and_remove_cross_batch_edges(db_url: str) -> None:
    count = max(BATCH_ROWS, DELETE_ROWS) + 7
    lines = [Rule("p", (f"role{n % 13}", f"org{n}", f"/api/{n}/*", "GET", "allow")) for n in range(count)]
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            before = await read_version(session)
            assert await add_rules(session, [*lines[:10], *lines]) == count, "duplicates in the input count once"
            assert await read_version(session) == before + 1, "one version bump for the whole load"
            await session.commit()
        async with session_factory(engine)() as session:
            extra = Rule("g", ("role1", "member", "org1"))
            assert await add_rules(session, [*lines, extra]) == 1, "what is stored is skipped"
            await session.commit()
        async with session_factory(engine)() as session:
            near = Rule("p", ("role0", "org0", "/api/0/*", "GET", "deny"))  # differs in one column only
            assert await remove_rules(session, [*lines[1:], near]) == count - 1
            await session.commit()
        async with session_factory(engine)() as session:
            remaining = [rule for rule in await stored_rules(session) if rule in (lines[0], extra)]
            assert remaining == [lines[0], extra]
    finally:
        await engine.dispose()


async def test_a_change_of_an_unknown_kind_means_a_full_rebuild(db_url: str) -> None:
    """A version whose operations include one this gateway does not know (a newer writer's) is not applied as a
    delta: the change run is None, so the snapshot is rebuilt from the tables."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            before = await read_version(session)
            await bump_version(session, [("link+", "corp", "alice", "u1")])
            await session.commit()
        async with session_factory(engine)() as session:
            assert await read_changes(session, before) is None
    finally:
        await engine.dispose()


async def test_external_identity_links_reach_the_snapshot(db_url: str) -> None:
    """Every link (a disabled user's too) is in the state read, so outside tokens map to their users; a link made
    with a plain version bump is seen by the next read."""
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            enabled = User(email=f"{secrets.token_hex(4)}@links.test", password_hash="x")
            disabled = User(email=f"{secrets.token_hex(4)}@links.test", password_hash="x", disabled=True)
            session.add_all([enabled, disabled])
            await session.flush()
            session.add(ExternalIdentity(user_id=enabled.id, provider="corp", subject="alice"))
            session.add(ExternalIdentity(user_id=disabled.id, provider="corp", subject="bob"))
            await bump_version(session)
            await session.commit()
        async with sessions() as session:
            state = await read_state(session)
        hot = HotState(ROOT / "model.conf")
        hot.install(state)
        assert hot.linked_user("corp", "alice") == enabled.id
        assert hot.linked_user("corp", "bob") == disabled.id and hot.user_disabled(disabled.id)
        assert hot.linked_user("github", "alice") is None
        assert not hot.user_disabled(enabled.id)
    finally:
        await engine.dispose()
