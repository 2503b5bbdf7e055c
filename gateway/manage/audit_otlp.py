"""The audit trail as OpenTelemetry logs: with `[audit] otlp_logs_endpoint`, every configuration change is sent
to a collector's OTLP/HTTP logs endpoint (`ExportLogsServiceRequest`, protobuf), oldest first, at least once,
through the same deliverer as the webhook (its own cursor row, lease and back-off).

Each change is one log record: its time is the change's, its body the event as the NDJSON export writes it, and
its attributes name it (`event.name` = `gateway.audit.<action>`, `gateway.audit.id`, `.seq`, `.hash`,
`.prev_hash`, `.actor`, `.action`, `.org`, `.target`), so the chain can be checked from the collector's side too.
The protobuf types come from `opentelemetry-proto` (the `otel` extra), imported only when this is configured.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.db.models import AuditRecord
from gateway.manage.audit import OTLP_ROW, view
from gateway.manage.audit_webhook import Transport
from gateway.settings import Audit

SCOPE = "gateway.audit"
SERVICE = "casbin-gateway"
_encoder = msgspec.json.Encoder()


def otlp_logs_transport(settings: Audit) -> Transport:
    if settings.otlp_logs_endpoint is None:
        raise ValueError("audit logs over OTLP need [audit] otlp_logs_endpoint")
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    def value(raw: Any) -> AnyValue:
        if isinstance(raw, int):
            return AnyValue(int_value=raw)
        return AnyValue(string_value=str(raw))

    def attributes(pairs: dict[str, Any]) -> list[KeyValue]:
        return [KeyValue(key=key, value=value(raw)) for key, raw in pairs.items() if raw is not None]

    def record(row: AuditRecord, observed: int) -> LogRecord:
        event = view(row)
        return LogRecord(
            time_unix_nano=int(row.created_at.timestamp() * 1_000_000) * 1000,
            observed_time_unix_nano=observed,
            severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
            severity_text="INFO",
            body=AnyValue(string_value=_encoder.encode(event).decode()),
            attributes=attributes(
                {
                    "event.name": f"{SCOPE}.{row.action}",
                    "gateway.audit.id": row.id,
                    "gateway.audit.seq": row.seq,
                    "gateway.audit.hash": row.hash,
                    "gateway.audit.prev_hash": row.prev_hash,
                    "gateway.audit.actor": row.actor,
                    "gateway.audit.action": row.action,
                    "gateway.audit.org": row.org,
                    "gateway.audit.target": row.target,
                }
            ),
        )

    def encode(rows: list[AuditRecord]) -> tuple[bytes, dict[str, str]]:
        observed = time.time_ns()
        request = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=Resource(attributes=attributes({"service.name": SERVICE})),
                    scope_logs=[
                        ScopeLogs(
                            scope=InstrumentationScope(name=SCOPE),
                            log_records=[record(row, observed) for row in rows],
                        )
                    ],
                )
            ]
        )
        return request.SerializeToString(), {"Content-Type": "application/x-protobuf", **settings.otlp_headers}

    return Transport("audit OTLP logs", OTLP_ROW, settings.otlp_logs_endpoint, settings.webhook_timeout, encode)
