"""The audit trail as a hash chain: every event written through any session gets the next sequence number, the
previous event's hash and its own, at flush, under a lock on the chain's head row, so events are chained in the
order their transactions commit and a transaction that rolls back leaves no gap.

    hash = SHA-256( prev_hash "\\n" canonical(event) )

`canonical` is a JSON array of the fields an export shows (sequence number, time to the microsecond, actor,
action, org, target, before, after, request id), so a chain can be checked from the database or from an NDJSON
export alike (`gateway audit verify`). The same link function chains the request decision log of each process
(`gateway.access.audit`), whose lines are hashed as written.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, UOWTransaction

from gateway.db.models import AuditChain, AuditRecord

GENESIS = "0" * 64
"""The `prev_hash` of the first event of a chain."""
ADMIN_STREAM = "admin"
"""The checkpoints' name for this trail (a decision log's stream is its process's id)."""


def split_detail(detail: str) -> tuple[Any, Any]:
    """(before, after) of a stored detail: `{"before", "after"}`, or any other object, which is all `after`."""
    parsed = json.loads(detail or "{}")
    if isinstance(parsed, dict) and "before" in parsed:
        return parsed.get("before"), parsed.get("after")
    if isinstance(parsed, dict) and "after" in parsed:
        return None, parsed["after"]
    return None, parsed


def stamp(value: dt.datetime) -> str:
    """A time as the chain hashes it: UTC, microseconds, `Z`."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    seq: int,
    created_at: dt.datetime,
    actor: str,
    action: str,
    org: str | None,
    target: str,
    before: Any,
    after: Any,
    request_id: str | None,
) -> bytes:
    fields = [seq, stamp(created_at), actor, action, org, target, before, after, request_id]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content).hexdigest()


def record_hash(row: AuditRecord, seq: int, prev_hash: str) -> str:
    before, after = split_detail(row.detail)
    content = canonical(seq, row.created_at, row.actor, row.action, row.org, row.target, before, after, row.request_id)
    return link(prev_hash, content)


def checkpoint_message(stream: str, seq: int, hash_: str, created_at: dt.datetime, kind: str) -> bytes:
    """What a checkpoint's signature covers."""
    return f"gateway-audit-checkpoint\n{kind}\n{stream}\n{seq}\n{hash_}\n{stamp(created_at)}".encode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@event.listens_for(Session, "before_flush")
def _chain_new_events(session: Session, _context: UOWTransaction, _instances: object) -> None:
    """Chain the events this flush adds, in the order they were added, after the head (locked until the
    transaction ends: the head row is written first, which on SQLite also takes the database's write lock)."""
    added = [obj for obj in session.new if isinstance(obj, AuditRecord) and obj.seq is None]
    if not added:
        return
    connection = session.connection()
    touched = connection.execute(update(AuditChain).where(AuditChain.id == 1).values(seq=AuditChain.seq))
    if not touched.rowcount:  # the head row is missing (made by the migration): start a chain, once
        dialect = connection.dialect.name
        start = (pg_insert if dialect == "postgresql" else sqlite_insert)(AuditChain)
        connection.execute(start.values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
    current = select(AuditChain.seq, AuditChain.hash).where(AuditChain.id == 1).with_for_update()
    head = connection.execute(current).one()
    seq, prev = int(head[0]), str(head[1])
    for row in added:
        seq += 1
        row.seq, row.prev_hash = seq, prev
        row.hash = prev = record_hash(row, seq, prev)
    connection.execute(update(AuditChain).where(AuditChain.id == 1).values(seq=seq, hash=prev))
