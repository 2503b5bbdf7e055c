"""Seeding and reading the audit trail straight from the database, for the retention, webhook and tail tests."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import AuditDelivery, AuditRecord, utcnow


async def add_events(db_url: str, *days_old: float, org: str | None = "acme") -> list[int]:
    """One event per age (in days, oldest first as given), committed together; their ids."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            rows = [
                AuditRecord(
                    created_at=utcnow() - dt.timedelta(days=age),
                    actor="cli:seed",
                    action="test.seed",
                    org=org,
                    target=f"aged {age} days",
                    detail='{"after": null, "before": null}',
                )
                for age in days_old
            ]
            session.add_all(rows)
            await session.commit()
            return [row.id for row in rows]
    finally:
        await engine.dispose()


async def event_ids(db_url: str) -> list[int]:
    """Every stored event's id, in order."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list(await session.scalars(select(AuditRecord.id).order_by(AuditRecord.id)))
    finally:
        await engine.dispose()


async def delivery_row(db_url: str) -> AuditDelivery | None:
    """The webhook's cursor and lease row, if it exists yet."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return await session.get(AuditDelivery, 1)
    finally:
        await engine.dispose()


async def set_delivered(db_url: str, last_id: int) -> None:
    """Put the webhook's cursor at `last_id`, as if it had delivered every event up to it."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            session.add(AuditDelivery(id=1, last_id=last_id, failures=0, last_error=""))
            await session.commit()
    finally:
        await engine.dispose()
