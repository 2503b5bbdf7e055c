"""Writing one event of the trail of changes (`audit_events`) into the caller's transaction: it commits or rolls
back with the change, and is chained at flush (`gateway.db.chain`). Every layer that changes something writes
through this: the management services (`manage.common.record`, with their actor) and the identity lifecycle
(sign-up, password, email, second factor, sessions: the user acting on their own account)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import AuditRecord, utcnow

AUDIT_RECORDED = "gateway.audit_recorded"
"""Set in `session.info` by `write_event`: whoever commits wakes the audit trail's deliverers (webhook, OTLP)."""


def write_event(
    session: AsyncSession,
    actor: str,
    action: str,
    *,
    org: str | None = None,
    target: str = "",
    before: Any = None,
    after: Any = None,
    request_id: str | None = None,
) -> None:
    """Add the event; never pass a secret in `before` or `after` (they are exported and delivered as they are)."""
    session.info[AUDIT_RECORDED] = True
    session.add(
        AuditRecord(
            created_at=utcnow(),
            actor=actor,
            action=action,
            org=org,
            target=target[:255],
            detail=json.dumps({"before": before, "after": after}, default=str, sort_keys=True),
            request_id=request_id,
        )
    )
