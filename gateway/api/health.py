"""/healthz (the process answers), /readyz (database reachable, policy loaded), /metrics (Prometheus)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from gateway.errors import ServiceUnavailable
from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Runtime


@get("/metrics", sync_to_thread=False)
def metrics(runtime: NamedDependency[Runtime]) -> Response[bytes]:
    """Prometheus text format: requests by route, status and decision; latency split gateway/upstream."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(runtime: NamedDependency[Runtime]) -> dict[str, Any]:
    try:
        async with runtime.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("database unreachable") from exc
    loaded_at = runtime.policy.loaded_at
    if loaded_at is None:
        raise ServiceUnavailable("policy not loaded")
    return {
        "status": "ready",
        "policy_version": runtime.policy.version,
        "policy_loaded_at": dt.datetime.fromtimestamp(loaded_at, dt.UTC).isoformat(),
        "policy_rules": runtime.policy.rule_count,
        "policy_synced_at": dt.datetime.fromtimestamp(runtime.last_sync or loaded_at, dt.UTC).isoformat(),
        "listening": runtime.listener.connected if runtime.listener is not None else None,
    }
