"""The gateway's own paths, in one place: what it reserves, which plane serves each, what the management port takes.

    /auth /admin /healthz /readyz /metrics /.well-known   control plane (the Litestar application)
    /portal                                                control plane: the browser sign-in portal (404 when off)
    /authz/forward                                         data plane (forward-auth decisions)
    everything else under /authz                           reserved: 404, never forwarded
    anything else                                          data plane (the route table; no route is 404)

No route may overlap a reserved prefix (a catch-all `/` never shadows them: they are dispatched first).
With `admin_listen` set, /admin and /metrics are served on that listener only and are 404 on the public one.
"""

from __future__ import annotations

CONTROL_PREFIXES = ("/auth", "/admin", "/healthz", "/readyz", "/metrics", "/.well-known", "/portal")
FORWARD_AUTH_PATH = "/authz/forward"
RESERVED_PREFIXES = (*CONTROL_PREFIXES, "/authz")
MANAGEMENT_PREFIXES = ("/admin", "/metrics")
"""Moved to the management listener when `admin_listen` is set."""
PROBE_PREFIXES = ("/healthz", "/readyz")
"""Also answered on the management listener, so an orchestrator can probe either port."""
UNTRACED_PREFIXES = (*PROBE_PREFIXES, "/metrics")
"""Control-plane paths left out of traces: probes and scrapes arrive every few seconds and say nothing new."""
OPENAPI_PATH = "/auth/schema"
"""Where the OpenAPI document of the control plane is served (`/auth/schema/openapi.json`)."""

# A path can only be under a reserved prefix if it starts with one of these strings: one C-level check
# keeps the common proxied path from looping over the list.
_STARTS = tuple(RESERVED_PREFIXES)


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `path` (canonical) is one of `prefixes` or below one, on whole segments (`/authz` is not `/auth`)."""
    if not path.startswith(prefixes):
        return False
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def reserved(path: str) -> bool:
    """Whether `path` belongs to the gateway itself (and must never be forwarded)."""
    return path.startswith(_STARTS) and under(path, RESERVED_PREFIXES)
