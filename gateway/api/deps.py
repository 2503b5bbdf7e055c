"""Dependencies of the control plane's handlers: each service the runtime built at start-up, by name, plus a
database session per request, the caller's client address and the current principal.

A handler declares the services it uses (`tokens: NamedDependency[TokenService]`) and never reaches into the
runtime; only readiness (which reports on the runtime itself) asks for `runtime`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.credentials import authenticate_waiting
from gateway.access.peer import resolve_peer
from gateway.db.engine import STATE_CHANGED
from gateway.errors import InvalidToken
from gateway.identity.mail import MAIL_QUEUED
from gateway.identity.sessions import Client
from gateway.identity.tokens import Principal
from gateway.manage.common import AUDIT_RECORDED
from gateway.runtime import Runtime, Services

log = logging.getLogger("gateway.api")


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def provide_services(state: State) -> Services:
    runtime: Runtime = state.runtime
    return runtime.services


def _service(name: str) -> Provide:
    def provide(services: NamedDependency[Services]) -> Any:
        return getattr(services, name)

    return Provide(cast(Callable[..., Any], provide), sync_to_thread=False)


async def provide_db(runtime: NamedDependency[Runtime]) -> AsyncGenerator[AsyncSession, None]:
    """A session whose transaction commits when the handler returns and rolls back when it raises. After a
    change to what the hot path holds (`bump_version`), this process reloads before the response is sent, so
    the caller's next request (proxied or admin) already sees it; other processes hear of it at once on
    PostgreSQL (NOTIFY), within a poll on SQLite. A transaction that queued mail wakes the mailer, one that wrote an
    audit event the audit webhook (it only looks: a slow receiver never holds the response). Anything else
    (a login, a refresh) costs no further query."""
    async with runtime.services.sessions() as session:
        try:
            try:
                yield session
            except Exception:
                await session.rollback()
                raise
            else:
                await session.commit()
        finally:
            # Also after an error: a handler may commit and then refuse (a reused refresh token ends its
            # session, then answers 401). A flag from a rolled-back change costs one version read, nothing more.
            info = session.info
            await _after_commit(
                runtime, info.pop(STATE_CHANGED, False), info.pop(MAIL_QUEUED, False), info.pop(AUDIT_RECORDED, False)
            )


async def _after_commit(runtime: Runtime, changed: bool, mailed: bool, audited: bool) -> None:
    if mailed:
        runtime.services.mailer.kick()
    if audited:
        for deliverer in (runtime.services.webhook, runtime.services.otlp_logs):
            if deliverer is not None:
                deliverer.kick()
    if changed:
        try:
            await runtime.refresh()
        except Exception:
            log.exception("policy reload after a change failed; the next poll retries")


def client_address(connection: ASGIConnection[Any, Any, Any, Any], services: Services) -> str:
    """The caller's address, through trusted proxies only (the data plane's rule: access/peer.py)."""
    raw = cast(list[tuple[bytes, bytes]], connection.scope["headers"])
    host = connection.client.host if connection.client else ""
    scheme = connection.scope.get("scheme", "http")
    return resolve_peer(host, scheme, raw, services.pipeline.trusted_proxies).client_ip


def provide_client(request: Request[object, object, State], services: NamedDependency[Services]) -> Client:
    """The caller's address (through trusted proxies only) and user agent, for sessions and throttling."""
    return Client(ip=client_address(request, services), user_agent=request.headers.get("user-agent", ""))


async def provide_principal(request: Request[object, object, State], services: NamedDependency[Services]) -> Principal:
    """The caller of an /auth endpoint: an access token only (API keys do not manage accounts; a key from outside
    its allow-list is refused as any unknown key, not told apart by this rule). An outside token counts only for
    its linked user (and carries no `auth_time`: changes that need a recent sign-in still ask for one here)."""
    principal = await authenticate_waiting(
        services.tokens,
        request.headers.get("authorization"),
        state=services.state,
        client_ip=client_address(request, services),
        outside=services.outside,
    )
    if principal.key is not None:
        raise InvalidToken("API keys cannot manage accounts; use an access token")
    if not principal.has_account:
        raise InvalidToken("this outside identity has no linked account here")
    return principal


def dependencies() -> dict[str, Provide]:
    """The application's dependencies. `hot` is the hot-path snapshot (`HotState`): Litestar reserves
    `state` for its own."""
    return {
        "runtime": Provide(provide_runtime, sync_to_thread=False),
        "services": Provide(provide_services, sync_to_thread=False),
        "db": Provide(provide_db),
        "client": Provide(provide_client, sync_to_thread=False),
        "settings": _service("settings"),
        "hot": _service("state"),
        "hasher": _service("hasher"),
        "sealer": _service("sealer"),
        "tokens": _service("tokens"),
        "throttle": _service("throttle"),
        "metrics": _service("metrics"),
        "federation": _service("federation"),
    }
