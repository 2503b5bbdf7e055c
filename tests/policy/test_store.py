"""The policy store writes many lines in batches: counts stay exact across batch edges, duplicates in the input
and lines already stored are added once, and removal matches every column."""

from __future__ import annotations

from gateway.db.engine import create_engine, read_version, session_factory
from gateway.policy.rules import Rule
from gateway.policy.store import BATCH_ROWS, DELETE_ROWS, add_rules, remove_rules, stored_rules


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
