"""A real OTLP/HTTP trace receiver for the tests: an aiohttp server on an ephemeral port that decodes what the
gateway's exporter sends (protobuf `ExportTraceServiceRequest`, as a collector does) and keeps it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.waiting import eventually


@dataclass
class Exported:
    """One span as the collector received it (ids in hex, kinds and statuses by name: SERVER, ERROR...)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    """Empty for the root of a trace."""
    attributes: dict[str, Any]
    status: str
    start_ns: int
    end_ns: int
    resource: dict[str, Any]


@dataclass
class Collector:
    url: str
    """The OTLP/HTTP traces endpoint (`.../v1/traces`)."""
    bodies: list[bytes] = field(default_factory=list)
    """Every export request's body, as sent."""
    headers: list[dict[str, str]] = field(default_factory=list)
    """Every export request's headers (lower-case names)."""
    spans: list[Exported] = field(default_factory=list)

    async def wait_for(self, count: int, *, within: float = 10.0) -> list[Exported]:
        """The spans received once there are at least `count` of them."""
        await eventually(lambda: len(self.spans) >= count, within=within, what=f"{count} spans exported")
        return list(self.spans)

    def named(self, name: str) -> list[Exported]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> Exported:
        found = self.named(name)
        assert len(found) == 1, (name, [span.name for span in self.spans])
        return found[0]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def decode_attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        found[pair.key] = _value(pair.value)
    return found


def _decode(body: bytes) -> list[Exported]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[Exported] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Exported(
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes=decode_attributes(span.attributes),
                        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        resource=resource,
                    )
                )
    return spans


@asynccontextmanager
async def receiving() -> AsyncIterator[Collector]:
    """A collector listening on 127.0.0.1 for the length of the block."""
    collector = Collector(url="")

    async def export(request: web.Request) -> web.Response:
        body = await request.read()
        collector.bodies.append(body)
        collector.headers.append({name.lower(): value for name, value in request.headers.items()})
        collector.spans.extend(_decode(body))
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    async with listening(app) as port:
        collector.url = f"http://127.0.0.1:{port}/v1/traces"
        yield collector


@asynccontextmanager
async def listening(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 on an ephemeral port (yielded) for the length of the block."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
