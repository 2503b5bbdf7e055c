"""The control plane's application: `create_app(runtime)`, its exception handlers and its OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, cast

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import DataError, DBAPIError

from gateway import __version__
from gateway.api.admin import admin_router
from gateway.api.admin.guard import provide_caller
from gateway.api.auth import CONTROLLERS as AUTH_CONTROLLERS
from gateway.api.bodies import BodyGuard
from gateway.api.deps import dependencies
from gateway.api.health import healthz, metrics, readyz
from gateway.api.keys import jwks
from gateway.api.openapi import describe_problems
from gateway.db.engine import unreachable
from gateway.errors import (
    PROBLEM_CONTENT_TYPE,
    GatewayError,
    ServiceUnavailable,
    Unprocessable,
    problem_body,
    render,
)
from gateway.namespace import OPENAPI_PATH
from gateway.runtime import Runtime

log = logging.getLogger("gateway")

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def _problem(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        body,
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"cache-control": "no-store", **(headers or {})},
    )


def _gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _problem(exc.status, render(exc), exc.headers)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return _internal(_, exc)
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    body = problem_body(
        status=status, slug=_HTTP_SLUGS.get(status, "client-error"), title=_title(status), detail=str(exc.detail)
    )
    return _problem(status, body, exc.headers)


def _validation_error(exc: ValidationException) -> Response[bytes]:
    """Litestar's validation failures. Values that fail a field's type or bounds are 422 with the field named;
    a body that is not the expected JSON shape at all (`{`, `[]`) stays 400."""
    errors = [item for item in exc.extra if isinstance(item, dict)] if isinstance(exc.extra, list) else []
    fields = [_field_of(item) for item in errors]
    named = [name for name in fields if name]
    if not named or len(named) != len(errors):
        extra = {"errors": errors} if errors else None
        body = problem_body(status=400, slug="bad-request", title="Bad request", detail=str(exc.detail), extra=extra)
        return _problem(400, body, exc.headers)
    detail = "; ".join(f"{name}: {item.get('message', 'invalid')}" for name, item in zip(fields, errors, strict=True))
    body = problem_body(
        status=422,
        slug=Unprocessable.slug,
        title=Unprocessable.title,
        detail=detail,
        extra={"field": named[0], "errors": errors},
    )
    return _problem(422, body, exc.headers)


def _field_of(item: dict[str, Any]) -> str:
    """The field a Litestar/msgspec validation message is about: `key` for parameters, `$.path` for bodies."""
    message = str(item.get("message", ""))
    if "- at `$." in message:
        return message.rsplit("- at `$.", 1)[1].rstrip("`")
    if item.get("key") and item["key"] != "data":  # "data" is the whole body
        return str(item["key"])
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    if "unknown field `" in message.lower():
        return message.lower().split("unknown field `", 1)[1].split("`", 1)[0]
    return ""


def _database_down(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[bytes]:
    """Database errors: an outage (refused, lost or refused connection, a server shutting down: see
    `db.engine.unreachable`) is 503 with Retry-After, so clients and load balancers retry; proxied requests go
    on meanwhile. A value the database cannot store is 422 (input validation should have caught it first);
    anything else is a bug: 500."""
    if unreachable(exc):
        return _unavailable(exc)
    if isinstance(exc, DataError) or _data_error(exc):
        log.warning("the database refused a value: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        error = Unprocessable("a value cannot be stored (control characters or an out-of-range number?)")
        return _problem(error.status, render(error), error.headers)
    return _internal(request, exc)


def _data_error(exc: DBAPIError) -> bool:
    """asyncpg's data errors (SQLSTATE class 22) that SQLAlchemy reports as a plain DBAPIError."""
    return isinstance(exc.orig, Exception) and "DataError" in {base.__name__ for base in type(exc.orig).__mro__}


def _unavailable(exc: BaseException) -> Response[bytes]:
    log.warning("database unreachable: %s", type(exc).__name__)
    error = ServiceUnavailable("the database is unreachable; try again shortly")
    return _problem(error.status, render(error), {"retry-after": "5"})


def _internal(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if unreachable(exc):  # a refused connection surfaces as a bare OSError, not as a DBAPIError
        return _unavailable(exc)
    log.error("unhandled error", exc_info=exc)  # the trace stays in the log, never in the response
    body = problem_body(
        status=500,
        slug="internal-error",
        title="Internal error",
        detail="the gateway failed to handle this request",
    )
    return _problem(500, body)


def _title(status: int) -> str:
    return HTTPStatus(status).phrase


_EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    GatewayError: _gateway_error,
    HTTPException: _http_error,
    DBAPIError: _database_down,
    Exception: _internal,
}


def create_app(runtime: Runtime) -> Litestar:
    """The control plane: /auth, /admin, health, readiness, metrics and JWKS in one Litestar application with
    one OpenAPI document, and with `[browser] enabled` the sign-in portal's pages (/portal). Its lifespan starts
    and stops the runtime (once per process); the front door (`gateway.asgi`) hands it only the gateway's own
    paths, already canonical."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    handlers: list[Any] = [*AUTH_CONTROLLERS, admin_router(), healthz, readyz, metrics, jwks]
    templates = None
    if runtime.settings.browser.enabled:
        from gateway.api.portal import PortalController, template_config

        handlers.append(PortalController)
        templates = template_config()
    app = Litestar(
        route_handlers=handlers,
        template_config=templates,
        lifespan=[lifespan],
        dependencies={**dependencies(), "caller": Provide(provide_caller, sync_to_thread=False)},
        exception_handlers=_EXCEPTION_HANDLERS,
        middleware=[cast(Any, BodyGuard)],  # a plain ASGI middleware (gateway.asgitypes), not typed for Litestar
        openapi_config=OpenAPIConfig(title="casbin-gateway", version=__version__, path=OPENAPI_PATH),
        debug=False,
        logging_config=None,  # logging is configured by whoever runs the app (serve.py, tests)
    )
    app.state.runtime = runtime
    describe_problems(app)
    return app
