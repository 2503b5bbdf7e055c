"""Reading the audit trail of configuration changes, newest first, filtered by org, actor, action and time."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import AuditRecord
from gateway.manage.common import Page, fetch_page


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    created_at: dt.datetime
    actor: str
    action: str
    org: str | None
    target: str
    before: Any
    after: Any
    request_id: str | None


def _view(row: AuditRecord) -> AuditView:
    detail = json.loads(row.detail or "{}")
    return AuditView(
        id=row.id,
        created_at=row.created_at,
        actor=row.actor,
        action=row.action,
        org=row.org,
        target=row.target,
        before=detail.get("before"),
        after=detail.get("after", detail if "before" not in detail else None),
        request_id=row.request_id,
    )


T = TypeVar("T", bound=Any)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    org: str | None = None
    """None: every org's events and the global ones."""
    actor: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def apply(self, query: Select[T]) -> Select[T]:
        if self.org is not None:
            query = query.where(AuditRecord.org == self.org)
        if self.actor is not None:
            query = query.where(AuditRecord.actor == self.actor)
        if self.action is not None:
            query = query.where(AuditRecord.action == self.action)
        if self.since is not None:
            query = query.where(AuditRecord.created_at >= self.since)
        if self.until is not None:
            query = query.where(AuditRecord.created_at < self.until)
        return query


_encoder = msgspec.json.Encoder()
EXPORT_BATCH = 1_000


async def export_events(sessions: async_sessionmaker[AsyncSession], chosen: AuditFilter) -> AsyncIterator[bytes]:
    """The matching events oldest first, one JSON object a line (NDJSON), read in batches, each batch in a
    short transaction of its own (an export of millions of events holds no transaction open)."""
    after = 0
    while True:
        async with sessions() as session:
            query = chosen.apply(select(AuditRecord)).where(AuditRecord.id > after).order_by(AuditRecord.id)
            rows = list(await session.scalars(query.limit(EXPORT_BATCH)))
        if not rows:
            return
        after = rows[-1].id
        yield b"".join(_encoder.encode(_view(row)) + b"\n" for row in rows)
        if len(rows) < EXPORT_BATCH:
            return


async def list_events(session: AsyncSession, chosen: AuditFilter, *, cursor: str | None, limit: int) -> Page[AuditView]:
    """The matching events, newest first, a page at a time."""
    query = chosen.apply(select(AuditRecord))
    page = await fetch_page(
        session, query, AuditRecord.id, cursor=cursor, limit=limit, key_of=lambda r: r.id, descending=True
    )
    return Page([_view(row) for row in page.items], page.next_cursor)
