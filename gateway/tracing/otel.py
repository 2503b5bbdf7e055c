"""Tracing on OpenTelemetry's SDK: a parent-based ratio sampler, W3C trace context, batches sent over OTLP/HTTP.

Imported only when `[tracing]` is enabled (it needs the `otel` extra). See gateway/tracing/__init__.py for the
spans and what they record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.access.audit import AuditEvent
from gateway.access.peer import TrustedProxies
from gateway.asgitypes import ASGIApp, Message, Receive, Scope, Send
from gateway.policy.hot import MATCHED
from gateway.settings import Tracing as TracingSettings
from gateway.tracing import RequestTrace, Tracing

# The HTTP semantic conventions' rule: any other method is recorded as _OTHER (a client picks the method).
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_ERROR = Status(StatusCode.ERROR)
CLOSE_SECONDS = 5.0
"""How long a stopping gateway waits for the collector to take the last spans. The SDK would wait up to 30 s
(longer than an orchestrator's grace period) when the collector is down."""

log = logging.getLogger("gateway.tracing")


class OpenTelemetryTracing(Tracing):
    """A tracer provider with its sampler and exporter, of this gateway only: OpenTelemetry's global provider
    is left alone (one process may hold several gateways, as the tests do)."""

    def __init__(self, settings: TracingSettings, trusted: TrustedProxies) -> None:
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self._provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        # The collector's credentials go to the exporter and nowhere else. Empty leaves the SDK's own
        # OTEL_EXPORTER_OTLP_TRACES_HEADERS in charge.
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers or None)
        delay = settings.batch_delay_seconds * 1000
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
        self.tracer = self._provider.get_tracer("casbin-gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self._trust_all = settings.trust_incoming == "all"
        self._trusted = trusted if settings.trust_incoming == "trusted_proxies" else None

    def request(self, name: str, scope: Scope) -> RequestTrace:
        root = self.tracer.start_span(name, context=self._parent(scope), kind=SpanKind.SERVER)
        return SpanTrace(self, root) if root.is_recording() else UnsampledTrace(self, root)

    def _parent(self, scope: Scope) -> Context:
        """The caller's trace when it may be continued, else an empty context: a new trace."""
        if not self._trust_all:
            client = scope.get("client")
            if self._trusted is None or not self._trusted.trusts(client[0] if client else ""):
                return Context()
        parents: list[str] = []
        states: list[str] = []
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parents.append(value.decode("latin-1"))
            elif name == b"tracestate":
                states.append(value.decode("latin-1"))  # W3C: several tracestate headers are one list
        if len(parents) != 1:  # none, or ambiguous: W3C says to start afresh
            return Context()
        carrier = {"traceparent": parents[0]}
        if states:
            carrier["tracestate"] = ",".join(states)
        # A malformed traceparent leaves the context empty.
        return self.propagator.extract(carrier, context=Context())

    async def control(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, path: str) -> None:
        span = self.tracer.start_span("gateway control", context=self._parent(scope), kind=SpanKind.SERVER)
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            method = _method(scope["method"])
            facts: dict[str, Any] = {"http.request.method": method, "url.path": path}
            # Litestar leaves the matched route's template in the scope; a path it has no route for has none.
            template = scope.get("path_template")
            if template:
                facts["http.route"] = template
            span.update_name(f"{method} {template}" if template else method)
            if status:
                facts["http.response.status_code"] = status
            if status >= 500 or not status:
                facts["error.type"] = str(status) if status else "no-response"
                span.set_status(_ERROR)
            span.set_attributes(facts)
            span.end()

    async def close(self) -> None:
        # In a thread of its own: exporting blocks, the collector may be served by this very loop (the tests'),
        # and a daemon thread left behind when time is up does not hold the process at exit (to_thread's would).
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():  # cancelled when the wait timed out
                done.set_result(None)

        def shut_down() -> None:
            try:
                self._provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                    loop.call_soon_threadsafe(finished)

        threading.Thread(target=shut_down, name="gateway-tracing-close", daemon=True).start()
        try:
            await asyncio.wait_for(done, CLOSE_SECONDS)
        except TimeoutError:
            log.warning("tracing: the collector did not take the last spans within %.0f s: dropped", CLOSE_SECONDS)


class SpanTrace(RequestTrace):
    """A request's SERVER span and the span of the stage under way, which ends when the next one starts."""

    __slots__ = ("_context", "_forwarding", "_root", "_stage", "_tracing")

    def __init__(self, tracing: OpenTelemetryTracing, root: Span) -> None:
        self._tracing = tracing
        self._root = root
        self._context = set_span_in_context(root, Context())
        self._stage: Span | None = None
        self._forwarding = False

    def stage(self, name: str) -> None:
        if self._stage is not None:
            self._stage.end()
        self._stage = self._tracing.tracer.start_span(name, context=self._context, kind=SpanKind.INTERNAL)

    def forward(self, headers: list[tuple[str, str]], *, method: str, host: str, port: int) -> list[tuple[str, str]]:
        if self._stage is not None:
            self._stage.end()
        facts: dict[str, Any] = {"http.request.method": _method(method), "server.address": host, "server.port": port}
        span = self._tracing.tracer.start_span("forward", context=self._context, kind=SpanKind.CLIENT, attributes=facts)
        self._stage, self._forwarding = span, True
        return _propagated(self._tracing, headers, span)

    def finish(self, event: AuditEvent, failure: str | None) -> None:
        # `failure` is the stage's error.type, and the SERVER span's when the gateway answered 5xx or nothing.
        stage = self._stage
        if stage is not None:
            if self._forwarding and event.upstream_status is not None:
                stage.set_attribute("http.response.status_code", event.upstream_status)
                if event.upstream_status >= 400:  # a client span's error, by the HTTP conventions
                    stage.set_status(_ERROR)
            elif failure is not None or self._forwarding:  # stopped here, or the upstream never answered
                stage.set_attribute("error.type", failure or "_OTHER")
                stage.set_status(_ERROR)
            stage.end()
        root = self._root
        root.set_attributes(_facts(event))
        if event.status >= 500 or not event.status:  # a 4xx is the client's error, not the server's
            root.set_attribute("error.type", failure or (str(event.status) if event.status else "_OTHER"))
            root.set_status(_ERROR)
        root.end()


class UnsampledTrace(RequestTrace):
    """A request the sampler left out: nothing is recorded, so no stage gets a span (each costs microseconds
    even unrecorded), and the upstream learns the trace (not sampled) from the SERVER span itself."""

    __slots__ = ("_root", "_tracing")

    def __init__(self, tracing: OpenTelemetryTracing, root: Span) -> None:
        self._tracing = tracing
        self._root = root

    def stage(self, name: str) -> None:
        pass

    def forward(self, headers: list[tuple[str, str]], *, method: str, host: str, port: int) -> list[tuple[str, str]]:
        return _propagated(self._tracing, headers, self._root)

    def finish(self, event: AuditEvent, failure: str | None) -> None:
        self._root.end()


def _propagated(tracing: OpenTelemetryTracing, headers: list[tuple[str, str]], span: Span) -> list[tuple[str, str]]:
    """`headers` with `span`'s traceparent (and tracestate) instead of any the caller sent."""
    carrier: dict[str, str] = {}
    tracing.propagator.inject(carrier, context=set_span_in_context(span, Context()))
    return [*(header for header in headers if header[0] not in TRACE_HEADERS), *carrier.items()]


def _method(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


def _facts(event: AuditEvent) -> dict[str, Any]:
    """The SERVER span's attributes: the audit event's, less the subject and the client address."""
    facts: dict[str, Any] = {
        "http.request.method": _method(event.method),
        "url.path": event.path,
        "gateway.request_id": event.request_id,
    }
    if event.route is not None:
        facts["http.route"] = event.route
    if event.org is not None:
        facts["gateway.org"] = event.org
    if event.granted is not None:
        facts["gateway.decision"] = "allow" if event.granted else "deny"
    if event.reason.startswith(MATCHED):
        facts["gateway.rule"] = event.reason[len(MATCHED) :]
    if event.decision_id is not None:
        facts["gateway.decision_id"] = event.decision_id
    if event.status:
        facts["http.response.status_code"] = event.status
    if event.upstream_status is not None:
        facts["gateway.upstream.status_code"] = event.upstream_status
    return facts
