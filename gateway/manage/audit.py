"""Reading the audit trail of configuration changes, newest first, filtered by org, actor, action and time."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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


async def list_events(
    session: AsyncSession,
    *,
    org: str | None,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: str | None,
    limit: int,
) -> Page[AuditView]:
    """`org` None lists every org's events and the global ones."""
    query = select(AuditRecord)
    if org is not None:
        query = query.where(AuditRecord.org == org)
    if actor is not None:
        query = query.where(AuditRecord.actor == actor)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    if since is not None:
        query = query.where(AuditRecord.created_at >= since)
    if until is not None:
        query = query.where(AuditRecord.created_at < until)
    page = await fetch_page(
        session, query, AuditRecord.id, cursor=cursor, limit=limit, key_of=lambda r: r.id, descending=True
    )
    return Page([_view(row) for row in page.items], page.next_cursor)
