"""`[audit] retention_days` (gateway/manage/audit.py prune_events, run by the runtime at start and hourly): events
older than the retention go, in batches; recent ones, the newest one and, with a webhook, undelivered ones stay."""

from __future__ import annotations

from pathlib import Path

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import utcnow
from gateway.manage import audit
from tests.conftest import Upstream, gateway_settings, serving
from tests.manage.audit_helpers import add_events, event_ids, set_delivered
from tests.waiting import eventually


async def test_a_gateway_with_a_retention_deletes_old_events_when_it_starts(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """With retention_days = 30, events of 31 and 400 days are deleted at start; those of 29 days and today stay."""
    old = await add_events(db_url, 400, 31)
    recent = await add_events(db_url, 29, 0)
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), audit={"retention_days": 30}
    )
    async with serving(settings, upstream) as gateway:

        async def pruned() -> bool:
            return await event_ids(db_url) == recent

        await eventually(pruned, what="the old events were never deleted")
        assert not set(old) & set(await event_ids(db_url))
        assert (await gateway.runtime.prune_audit()).removed == 0, "a second run finds nothing more"


async def test_pruning_works_in_batches_and_keeps_the_newest_event(db_url: str) -> None:
    """More old events than one batch all go, in several transactions, except the newest: it keeps ids growing
    (SQLite would otherwise give its id to the next event)."""
    ids = await add_events(db_url, *([100.0] * (audit.PRUNE_BATCH + 5)))
    engine = create_engine(db_url)
    try:
        pruned = await audit.prune_events(session_factory(engine), older_than=utcnow(), keep_undelivered=False)
    finally:
        await engine.dispose()
    assert (pruned.removed, pruned.kept) == (audit.PRUNE_BATCH + 4, 1)
    assert await event_ids(db_url) == [ids[-1]]


async def test_with_a_webhook_undelivered_events_are_never_pruned(db_url: str) -> None:
    """With a webhook, only events up to its cursor go, however old the others are; with no cursor yet, none."""
    ids = await add_events(db_url, 90, 80, 70, 60, 0)
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    try:
        pruned = await audit.prune_events(sessions, older_than=utcnow(), keep_undelivered=True)
        assert (pruned.removed, pruned.kept) == (0, 5), "nothing delivered yet: nothing goes"
        await set_delivered(db_url, ids[1])
        pruned = await audit.prune_events(sessions, older_than=utcnow(), keep_undelivered=True)
    finally:
        await engine.dispose()
    assert (pruned.removed, pruned.kept) == (2, 3)
    assert await event_ids(db_url) == ids[2:]
