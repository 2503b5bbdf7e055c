"""The audit trail of configuration changes: reading it (newest first, filtered by org, actor, action and time),
following it in id order, and pruning it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Select, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.chain import ADMIN_STREAM, split_detail
from gateway.db.models import AuditDelivery, AuditRecord
from gateway.identity.tokens import KeyRing
from gateway.manage.audit_chain import write_checkpoint
from gateway.manage.common import Page, fetch_page
from gateway.settings import Audit


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
    seq: int | None
    """Place in the tamper-evident chain (None for events from before it); see `gateway audit verify`."""
    prev_hash: str | None
    hash: str | None


def view(row: AuditRecord) -> AuditView:
    before, after = split_detail(row.detail)
    return AuditView(
        id=row.id,
        created_at=row.created_at,
        actor=row.actor,
        action=row.action,
        org=row.org,
        target=row.target,
        before=before,
        after=after,
        request_id=row.request_id,
        seq=row.seq,
        prev_hash=row.prev_hash,
        hash=row.hash,
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
        yield b"".join(_encoder.encode(view(row)) + b"\n" for row in rows)
        if len(rows) < EXPORT_BATCH:
            return


async def list_events(session: AsyncSession, chosen: AuditFilter, *, cursor: str | None, limit: int) -> Page[AuditView]:
    """The matching events, newest first, a page at a time."""
    query = chosen.apply(select(AuditRecord))
    page = await fetch_page(
        session, query, AuditRecord.id, cursor=cursor, limit=limit, key_of=lambda r: r.id, descending=True
    )
    return Page([view(row) for row in page.items], page.next_cursor)


# Other transactions writing audit_events now: each holds ROW EXCLUSIVE on the table from before it draws an id
# until it ends (pg_locks lists fast-path locks too).
_WRITERS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND relation = 'audit_events'::regclass"
    " AND mode = 'RowExclusiveLock' AND pid IS DISTINCT FROM pg_backend_pid()"
)


async def settled_up_to(session: AsyncSession) -> int | None:
    """The largest id at or below which every event is committed or gone for good, so that following the trail
    by id never skips one; None when that cannot be told right now (try again shortly).

    SQLite writes one transaction at a time, so ids become visible in order: the largest id is settled. On
    PostgreSQL an id is drawn at insert but seen at commit, so a transaction that drew 10 may commit after one that
    drew 11: the largest id seen is settled only if no other transaction is writing the table. The largest id is
    read first and the writers after, so a writer that drew a smaller id and had not committed is still listed.
    """
    top = await session.scalar(select(func.max(AuditRecord.id)))
    if session.get_bind().dialect.name == "postgresql" and await session.scalar(_WRITERS):
        return None
    return int(top or 0)


async def events_after(
    session: AsyncSession, after: int, *, up_to: int, limit: int, org: str | None = None
) -> list[AuditRecord]:
    """Events with `after` < id <= `up_to`, oldest first, at most `limit` (one org's only, with `org`)."""
    query = select(AuditRecord).where(AuditRecord.id > after, AuditRecord.id <= up_to)
    if org is not None:
        query = query.where(AuditRecord.org == org)
    return list(await session.scalars(query.order_by(AuditRecord.id).limit(limit)))


async def before_last(session: AsyncSession, count: int, *, up_to: int, org: str | None = None) -> int:
    """The id after which the last `count` events at or below `up_to` (of `org`, with `org`) begin: where a
    follower starts to show them first."""
    if count <= 0:
        return up_to
    query = select(AuditRecord.id).where(AuditRecord.id <= up_to)
    if org is not None:
        query = query.where(AuditRecord.org == org)
    newest = list(await session.scalars(query.order_by(AuditRecord.id.desc()).limit(count)))
    return newest[-1] - 1 if len(newest) == count else 0


WEBHOOK_ROW = 1
"""The webhook's row of `audit_delivery`."""
OTLP_ROW = 2
"""The OpenTelemetry logs' row."""


def destinations(settings: Audit) -> tuple[int, ...]:
    """The `audit_delivery` rows of the destinations configured (retention keeps what any has not delivered)."""
    configured = ((WEBHOOK_ROW, settings.webhook_url), (OTLP_ROW, settings.otlp_logs_endpoint))
    return tuple(row for row, url in configured if url is not None)


async def delivered_up_to(session: AsyncSession, rows: tuple[int, ...] = (WEBHOOK_ROW,)) -> int:
    """The last event every one of these deliveries (the webhook is row 1, OTLP logs row 2) has delivered (0 before
    a first delivery)."""
    found = {
        row: int(last)
        for row, last in await session.execute(
            select(AuditDelivery.id, AuditDelivery.last_id).where(AuditDelivery.id.in_(rows))
        )
    }
    return min(found.get(row, 0) for row in rows)


PRUNE_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Pruned:
    removed: int
    """Events deleted."""
    kept: int
    """Events old enough to go that stay: the webhook has not delivered them yet, or the newest event."""


async def prune_events(
    sessions: async_sessionmaker[AsyncSession],
    *,
    older_than: dt.datetime,
    keep_undelivered: bool,
    deliveries: tuple[int, ...] = (WEBHOOK_ROW,),
    ring: KeyRing | None = None,
) -> Pruned:
    """Delete events created before `older_than`, a batch per short transaction (a prune of millions holds no
    transaction or lock for long). With `keep_undelivered` (a webhook is configured), only events the webhook has
    delivered go. The newest event always stays: SQLite gives a new row the largest id plus one, so deleting the
    newest would hand its id out again, behind the webhook's cursor."""
    removed = 0
    while True:
        async with sessions() as session:
            newest = int(await session.scalar(select(func.max(AuditRecord.id))) or 0)
            last = min(newest - 1, await delivered_up_to(session, deliveries)) if keep_undelivered else newest - 1
            query = select(AuditRecord.id).where(AuditRecord.created_at < older_than, AuditRecord.id <= last)
            # The chain stays whole: nothing at or after the oldest kept event's place goes, even if older by the
            # clock (an event's time is taken before its transaction commits; replicas' clocks differ).
            kept = await session.scalar(select(func.min(AuditRecord.seq)).where(AuditRecord.created_at >= older_than))
            if kept is not None:
                query = query.where(or_(AuditRecord.seq.is_(None), AuditRecord.seq < kept))
            ids = list(await session.scalars(query.order_by(AuditRecord.id).limit(PRUNE_BATCH)))
            if ids:
                if ring is not None:  # the chain stays verifiable: a signed checkpoint at the cut
                    cut = (
                        await session.execute(
                            select(AuditRecord.seq, AuditRecord.hash)
                            .where(AuditRecord.id.in_(ids), AuditRecord.seq.is_not(None))
                            .order_by(AuditRecord.seq.desc())
                            .limit(1)
                        )
                    ).first()
                    if cut is not None and cut[0] is not None and cut[1] is not None:
                        write_checkpoint(session, ring, ADMIN_STREAM, int(cut[0]), str(cut[1]), kind="cut")
                await session.execute(delete(AuditRecord).where(AuditRecord.id.in_(ids)))
                await session.commit()
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    async with sessions() as session:
        kept = await session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.created_at < older_than)
        )
    return Pruned(removed=removed, kept=int(kept or 0))
