"""The process's outermost ASGI callable: the path made canonical once, then one of two planes.

    lifespan                                  -> the Litestar application (its lifespan starts the runtime, once)
    /auth /admin /healthz /readyz /metrics    -> the Litestar application (control plane)
    /portal
    /.well-known
    /authz/forward                            -> the pipeline's forward-auth decision (data plane)
    anything else                             -> the pipeline (data plane): no Litestar object on the way

A path with no single canonical form is refused here with 400, whichever plane it was aimed at. The control
plane routes on the canonical form too (`scope["path"]` is rewritten), so an encoded `/` or a dot segment can
never reach a different handler than the one the gateway's own checks saw. With a management listener
(`admin_listen`), /admin and /metrics are answered only on that port, and the probes on both. With `[tracing]`
on, control-plane requests (but probes and scrapes) are traced here, around the application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

from gateway.asgitypes import ASGIApp, Receive, Scope, Send
from gateway.errors import InvalidPath, NotFound
from gateway.namespace import (
    CONTROL_PREFIXES,
    FORWARD_AUTH_PATH,
    MANAGEMENT_PREFIXES,
    PROBE_PREFIXES,
    RESERVED_PREFIXES,
    UNTRACED_PREFIXES,
    under,
)
from gateway.paths import canonical_path, second_reading
from gateway.runtime import Runtime
from gateway.settings import Settings

FRAGMENT_MARK = "gateway.fragment"
"""Set in the scope by the HTTP protocol (serve.py) when the request target carried a `#` fragment."""


@dataclass(slots=True)
class FrontDoor:
    """Dispatches every connection of the process; built by `create_gateway`."""

    runtime: Runtime
    control: ASGIApp
    """The one Litestar application (control plane)."""
    management_ports: frozenset[int] = frozenset()
    """Local ports of the management listener; empty when there is none (everything on one port)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.control(scope, receive, send)
            return
        pipeline = self.runtime.services.pipeline
        try:
            if scope.get(FRAGMENT_MARK):
                raise InvalidPath("a fragment ('#') is not part of a request target")
            # raw_path, never scope["path"]: that one is already percent-decoded (an encoded '/' would be lost).
            raw: bytes | None = scope.get("raw_path")
            path = canonical_path(raw if raw is not None else scope["path"].encode())
        except InvalidPath as error:
            await pipeline.refuse(scope, receive, send, error)
            return
        if self.management_ports:
            server = scope.get("server")
            management = server is not None and server[1] in self.management_ports
            if management != under(path, MANAGEMENT_PREFIXES) and not (management and under(path, PROBE_PREFIXES)):
                await pipeline.refuse(scope, receive, send, NotFound("no such endpoint on this listener"), path=path)
                return
        if not path.startswith(RESERVED_PREFIXES):  # the common case: one C-level check
            await pipeline.proxy(scope, receive, send, path)
        elif path == FORWARD_AUTH_PATH:
            await pipeline.forward_auth(scope, receive, send)
        elif under(path, CONTROL_PREFIXES) and kind == "http":
            reason = second_reading(path)
            if reason is not None:
                await pipeline.refuse(scope, receive, send, InvalidPath(reason), path=path)
                return
            scope["path"] = unquote(path)
            tracing = self.runtime.services.tracing
            if tracing is None or under(path, UNTRACED_PREFIXES):
                await self.control(scope, receive, send)
            else:
                await tracing.control(self.control, scope, receive, send, path=path)
        else:  # the rest of /authz, or a WebSocket aimed at the control plane: the route table says 404
            await pipeline.proxy(scope, receive, send, path)


def create_gateway(settings: Settings, *, management_ports: frozenset[int] = frozenset()) -> FrontDoor:
    """The whole gateway as one ASGI callable. Nothing connects until the lifespan starts."""
    from gateway.app import create_app

    runtime = Runtime.configure(settings)
    return FrontDoor(runtime=runtime, control=cast(ASGIApp, create_app(runtime)), management_ports=management_ports)
