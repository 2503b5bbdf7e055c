"""Traces: what both planes call when `[tracing]` is on; `otel.py` implements it on OpenTelemetry.

    gateway proxy          SERVER    a proxied request (`gateway forward-auth` for a forward-auth decision)
      authenticate         INTERNAL  stage 2
      resolve              INTERNAL  stage 3: the org, then the rate limits
      enforce              INTERNAL  stage 4
      forward              CLIENT    stage 5: the upstream call; its context goes upstream as `traceparent`
    POST /auth/login       SERVER    a control-plane request, named by the route template that served it

This module imports no OpenTelemetry: `build_tracing` imports `otel.py` only when tracing is enabled, so a
gateway without the `otel` extra never loads it, and with tracing off the planes hold `None` and call nothing.

Spans say what the audit line says, less who and from where: method, canonical path (never the query string:
query strings carry tokens and signed-URL secrets), route, org, decision and deciding line, status codes,
request id. Never a header value, token, API key, cookie, body or error detail (a stage that stops a request
names the error's slug). A caller's `traceparent` and `tracestate` are continued only as `trust_incoming`
allows (by default from `trusted_proxies`); otherwise the request starts a new trace. Either way the upstream
gets the forward span's trace headers, never the caller's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from gateway.access.audit import AuditEvent
from gateway.access.peer import TrustedProxies
from gateway.asgitypes import ASGIApp, Receive, Scope, Send
from gateway.settings import Tracing as TracingSettings


class Tracing(ABC):
    """The process's tracer: built once by the runtime (`build_tracing`), closed with it."""

    @abstractmethod
    def request(self, name: str, scope: Scope) -> RequestTrace:
        """Start the SERVER span `name` of a data-plane request; the pipeline reports its stages to the result."""

    @abstractmethod
    async def control(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, path: str) -> None:
        """Run the control-plane application `app` for a request with canonical path `path` inside one SERVER
        span, named by the route template that served it (`POST /auth/login`, `GET /admin/orgs/{org}`)."""

    @abstractmethod
    async def close(self) -> None:
        """Send the spans still waiting, then stop."""


class RequestTrace(ABC):
    """One data-plane request's spans: the pipeline says when each stage starts, `finish` ends them."""

    __slots__ = ()  # one is made per request: its implementations keep theirs in slots

    @abstractmethod
    def stage(self, name: str) -> None:
        """Stage `name` (authenticate, resolve, enforce) starts; the one before it, if any, let the request
        through."""

    @abstractmethod
    def forward(self, headers: list[tuple[str, str]], *, method: str, host: str, port: int) -> list[tuple[str, str]]:
        """Stage 5 starts: the upstream call's CLIENT span. Returns `headers` carrying its `traceparent` (and
        `tracestate`) instead of any the caller sent."""

    @abstractmethod
    def finish(self, event: AuditEvent, failure: str | None) -> None:
        """The request is over, as `event` (complete) tells. `failure` is the slug of what stopped it (an
        error's, `client-disconnected`...), given to the stage under way."""


def build_tracing(settings: TracingSettings, trusted: TrustedProxies) -> Tracing | None:
    """The tracer `settings` ask for, or None when tracing is off."""
    if not settings.enabled:
        return None
    from gateway.tracing.otel import OpenTelemetryTracing

    return OpenTelemetryTracing(settings, trusted)
