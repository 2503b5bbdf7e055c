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
from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Runtime

PROBE = [HttpMethod.GET, HttpMethod.HEAD]


def _answer(request: Request[Any, Any, Any], body: bytes, media_type: str) -> Response[bytes]:
    """`body` for GET; for HEAD the same headers (its length included) and no body."""
    if request.method == "HEAD":
        return Response(b"", media_type=media_type, headers={"content-length": str(len(body))})
    return Response(body, media_type=media_type)


@route("/metrics", http_method=PROBE, sync_to_thread=False)
def metrics(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[bytes]:
    """Prometheus text format: requests by route, status and decision; latency split gateway/upstream."""
    return _answer(request, runtime.metrics.render(), CONTENT_TYPE)


@route("/healthz", http_method=PROBE, sync_to_thread=False)
def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The process answers."""
    return _answer(request, b'{"status":"ok"}', "application/json")


@route("/readyz", http_method=PROBE)
async def readyz(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[bytes]:
    """The database answers and a policy is loaded; 503 otherwise."""
    try:
        async with runtime.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("database unreachable") from exc
    loaded_at = runtime.policy.loaded_at
    if loaded_at is None:
        raise ServiceUnavailable("policy not loaded")
    ready = {
        "status": "ready",
        "policy_version": runtime.policy.version,
        "policy_loaded_at": dt.datetime.fromtimestamp(loaded_at, dt.UTC).isoformat(),
        "policy_rules": runtime.policy.rule_count,
        "policy_synced_at": dt.datetime.fromtimestamp(runtime.last_sync or loaded_at, dt.UTC).isoformat(),
        "listening": runtime.listener.connected if runtime.listener is not None else None,
    }
    return _answer(request, msgspec.json.encode(ready), "application/json")
