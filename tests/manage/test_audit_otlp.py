"""The audit trail as OpenTelemetry logs: a real OTLP/HTTP logs receiver (decoding `ExportLogsServiceRequest` as a
collector does) gets every change once, in chain order, with its attributes, after retries when it fails."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from sqlalchemy import func, select

from gateway.db.models import AuditRecord
from gateway.settings import ConfigError
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving
from tests.tracing.collector import decode_attributes, listening
from tests.waiting import eventually


@dataclass
class LogReceiver:
    url: str = ""
    fail_first: int = 0
    attempts: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def receiving(fail_first: int = 0) -> AsyncIterator[LogReceiver]:
    receiver = LogReceiver(fail_first=fail_first)

    async def export(request: web.Request) -> web.Response:
        receiver.attempts += 1
        body = await request.read()
        if receiver.attempts <= receiver.fail_first:
            return web.Response(status=503)
        receiver.headers.append({name.lower(): value for name, value in request.headers.items()})
        decoded = ExportLogsServiceRequest()
        decoded.ParseFromString(body)
        for resource_logs in decoded.resource_logs:
            receiver.resources.append(decode_attributes(resource_logs.resource.attributes))
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    receiver.records.append(
                        {
                            "scope": scope_logs.scope.name,
                            "time": record.time_unix_nano,
                            "severity": record.severity_text,
                            "body": json.loads(record.body.string_value),
                            "attributes": decode_attributes(record.attributes),
                        }
                    )
        return web.Response(body=ExportLogsServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/logs", export)
    async with listening(app) as port:
        receiver.url = f"http://127.0.0.1:{port}/v1/logs"
        yield receiver


async def _stored(gateway: Gateway) -> int:
    async with gateway.runtime.services.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(AuditRecord)) or 0)


async def test_every_change_reaches_the_collector_as_a_log_record(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    await load_system_policy(db_url)
    async with receiving(fail_first=2) as receiver:
        audit = {"otlp_logs_endpoint": receiver.url, "otlp_headers": {"authorization": "Bearer collector-secret"}}
        settings = gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), audit=audit)
        assert "collector-secret" not in repr(settings.audit)
        async with serving(settings, upstream) as gateway:
            await gateway.user("root@platform.test", superadmin=True)
            token = await gateway.login("root@platform.test")
            for slug in ("acme", "globex"):
                status, _, _ = await gateway.call("POST", "/admin/orgs", json={"slug": slug, "name": slug}, token=token)
                assert status == 201
            stored = await _stored(gateway)
            await eventually(lambda: len(receiver.records) >= stored, within=30, what="every change exported")
    assert receiver.attempts > 2, "the first two exports failed and were retried"
    records = receiver.records
    assert len(records) == stored, "each change once (nothing was lost or repeated)"
    seqs = [record["attributes"]["gateway.audit.seq"] for record in records]
    assert seqs == sorted(seqs) == list(range(seqs[0], seqs[0] + len(seqs)))
    for earlier, later in itertools.pairwise(records):
        assert later["attributes"]["gateway.audit.prev_hash"] == earlier["attributes"]["gateway.audit.hash"]
    created = [r for r in records if r["attributes"]["gateway.audit.action"] == "org.create"]
    assert [r["attributes"]["gateway.audit.target"] for r in created] == ["acme", "globex"]
    assert created[0]["attributes"]["event.name"] == "gateway.audit.org.create"
    assert (
        created[0]["body"]["action"] == "org.create"
        and created[0]["body"]["seq"] == created[0]["attributes"]["gateway.audit.seq"]
    )
    assert {r["scope"] for r in records} == {"gateway.audit"} and {r["severity"] for r in records} == {"INFO"}
    assert receiver.resources[0]["service.name"] == "casbin-gateway"
    assert all(h["authorization"] == "Bearer collector-secret" for h in receiver.headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in receiver.headers)


def test_a_bad_otlp_logs_endpoint_is_a_configuration_error(db_url: str, upstream: Upstream) -> None:
    with pytest.raises(ConfigError, match=r"audit\.otlp_logs_endpoint"):
        gateway_settings(db_url, upstream.url, audit={"otlp_logs_endpoint": "collector:4318"})
