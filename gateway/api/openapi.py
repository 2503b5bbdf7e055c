"""The OpenAPI document's error responses: every operation lists the problem+json answers it can give.

Litestar documents what a handler returns on success; the errors come from guards, dependencies, validation and
the shared exception handlers, so they are added here from what each operation has: every /auth and /admin
operation may answer 400, 401, 403, 422 and 503; path parameters (or `opt["may_be_missing"]`) add 404, a write
409, an If-Match header 412, a throttled sign-in 429. The body is always the same problem document.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute

from gateway.errors import PROBLEM_CONTENT_TYPE


class Problem(msgspec.Struct, kw_only=True):
    """An error (RFC 9457). `type` is a stable `urn:gateway:problem:<slug>`; `field` names the invalid input
    (422), `decision_id` links a denial to its audit line (403)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None
    decision_id: str | None = None


_DESCRIPTIONS = {
    400: "Malformed request (body that is not the expected JSON, bad header, invalid path)",
    401: "No credentials, or credentials that were rejected (WWW-Authenticate: Bearer)",
    403: "Authenticated but not allowed (with a decision_id), or a recent sign-in is needed",
    404: "No such resource",
    409: "The change clashes with the current state",
    412: "If-Match names a version that is no longer current",
    422: "Well-formed input with an invalid value; `field` names it",
    429: "Too many attempts; Retry-After says when to try again",
    503: "The database is unreachable, or (sign-in and password changes) password hashing is saturated; "
    "Retry-After says when to try again",
}
_THROTTLED = ("/auth/login", "/auth/login/mfa", "/auth/register", "/auth/forgot-password", "/auth/reset-password")


def _statuses(path: str, method: str, handler: HTTPRouteHandler) -> set[int]:
    parameters = inspect.signature(handler.fn).parameters
    # Every /auth and /admin operation checks a credential of some kind (a token, a password, a code, a
    # one-time link) and may refuse it; those that need a signed-in caller may also find it not allowed.
    found = {400, 401, 403, 422, 503}
    if "{" in path or handler.opt.get("may_be_missing"):  # a path parameter, or a singleton that may be absent
        found.add(404)
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        found.add(409)
    if "match" in parameters:  # the If-Match header parameter of admin writes
        found.add(412)
    if path in _THROTTLED:
        found.add(429)
    if path.startswith(("/healthz", "/.well-known", "/metrics")):
        found = set()
    if path.startswith("/readyz"):
        found = {503}
    return found


def describe_problems(app: Litestar) -> None:
    """Attach the problem responses to every documented operation of `app` (before its schema is first built)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            for method in handler.http_methods:
                statuses = _statuses(route.path, method, handler)
                documented = dict(handler.responses or {})
                for status in sorted(statuses):
                    documented.setdefault(
                        status,
                        ResponseSpec(
                            data_container=Problem,
                            description=_DESCRIPTIONS[status],
                            media_type=PROBLEM_CONTENT_TYPE,
                        ),
                    )
                handler.responses = documented
