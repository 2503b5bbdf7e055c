"""/healthz (the process answers), /readyz (database reachable, policy loaded), /metrics (Prometheus).

All three answer HEAD as well as GET (load balancers and probes often use HEAD): the same status and headers,
no body.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Request, Response, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from sqlalchemy import text

from gateway.errors import ServiceUnavailable
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.runtime import Runtime

PROBE = [HttpMethod.GET, HttpMethod.HEAD]


class Health(msgspec.Struct):
    status: str


class Ready(msgspec.Struct):
    status: str
    policy_version: int
    policy_loaded_at: str
    policy_rules: int
    """Lines in the snapshot being served (the system roles' included)."""
    policy_synced_at: str
    """The last time the database was reached."""
    listening: bool | None
    """PostgreSQL only: whether the change listener is connected."""


def _head_or(request: Request[Any, Any, Any], value: Any) -> Response[Any]:
    """`value` for GET; for HEAD the same status and type, no body."""
    return Response(None if request.method == "HEAD" else value)


@route("/metrics", http_method=PROBE, sync_to_thread=False, media_type=CONTENT_TYPE)
def metrics(request: Request[Any, Any, Any], metrics: NamedDependency[Metrics]) -> Response[bytes]:
    """Prometheus text format: requests by route, status and decision; latency split gateway/upstream."""
    body = metrics.render()
    if request.method == "HEAD":
        return Response(b"", media_type=CONTENT_TYPE, headers={"content-length": str(len(body))})
    return Response(body, media_type=CONTENT_TYPE)


@route("/healthz", http_method=PROBE, sync_to_thread=False)
def healthz(request: Request[Any, Any, Any]) -> Response[Health]:
    """The process answers."""
    return _head_or(request, Health(status="ok"))


@route("/readyz", http_method=PROBE)
async def readyz(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Ready]:
    """The database answers and a policy is loaded; 503 otherwise."""
    try:
        async with runtime.services.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("database unreachable") from exc
    loaded_at = runtime.state.loaded_at
    if loaded_at is None:
        raise ServiceUnavailable("policy not loaded")
    ready = Ready(
        status="ready",
        policy_version=runtime.state.version,
        policy_loaded_at=dt.datetime.fromtimestamp(loaded_at, dt.UTC).isoformat(),
        policy_rules=runtime.state.rule_count,
        policy_synced_at=dt.datetime.fromtimestamp(runtime.last_sync or loaded_at, dt.UTC).isoformat(),
        listening=runtime.services.listener.connected if runtime.services.listener is not None else None,
    )
    return _head_or(request, ready)
