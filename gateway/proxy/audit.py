"""Stage 6, audit: one structured event per proxied request, fixed keys, never a credential."""

from __future__ import annotations

import logging

import msgspec

log = logging.getLogger("gateway.audit")


class AuditEvent(msgspec.Struct, kw_only=True):
    """Filled in as the request moves through the stages; emitted once at the end."""

    method: str
    path: str
    route: str | None = None
    subject: str | None = None
    org: str | None = None
    granted: bool | None = None
    reason: str = ""
    decision_id: str | None = None
    status: int = 0
    upstream_status: int | None = None
    duration_ms: float = 0.0
    client_ip: str | None = None


_encoder = msgspec.json.Encoder()


def emit(event: AuditEvent) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(_encoder.encode(event).decode())
