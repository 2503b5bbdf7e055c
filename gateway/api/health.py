"""/healthz (the process answers) and /readyz (database reachable, policy loaded), both unauthenticated."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import get
from litestar.di import NamedDependency
from sqlalchemy import text

from gateway.errors import ServiceUnavailable
from gateway.runtime import Runtime


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
    }
