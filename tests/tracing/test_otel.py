"""Traces through real HTTP: a gateway exporting to a real OTLP/HTTP receiver (collector.py), a real upstream.

What a request's spans are and link to, whose trace context is continued and what the upstream gets, what is never
recorded, the control plane's spans, and that a gateway with tracing off sends nothing and loads no
OpenTelemetry. The data plane runs on the bare gateway (no database); the control plane on each database.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.access.audit import AuditEvent
from gateway.access.peer import TrustedProxies
from gateway.settings import Tracing as TracingSettings
from gateway.settings import settings_from_mapping
from gateway.tracing import build_tracing
from gateway.tracing.otel import CLOSE_SECONDS
from tests.conftest import (
    PASSWORD,
    Upstream,
    bare_serving,
    closed_port,
    gateway_settings,
    load_system_policy,
    serving,
)
from tests.tracing.collector import Collector, Exported, receiving

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
STAGES = ["authenticate", "resolve", "enforce", "forward"]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with receiving() as receiver:
        yield receiver


def tracing(collector: Collector, **overrides: Any) -> dict[str, Any]:
    """`[tracing]` exporting to `collector` in small batches (every 50 ms)."""
    return {"enabled": True, "endpoint": collector.url, "batch_delay_seconds": 0.05, **overrides}


def children(spans: list[Exported], root: Exported) -> list[Exported]:
    return sorted((span for span in spans if span.parent_id == root.span_id), key=lambda span: span.start_ns)


def traceparent_parts(value: str | None) -> tuple[str, str, bool]:
    """(trace id, parent span id, sampled) of a traceparent header."""
    assert value is not None, "no traceparent reached the upstream"
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)  # the other bits say how the trace id was made


async def test_a_proxied_request_is_one_trace_with_a_span_per_stage(
    upstream: Upstream, tmp_path: Path, collector: Collector
) -> None:
    """One SERVER span with authenticate, resolve, enforce (INTERNAL) and forward (CLIENT) under it, in that
    order, one trace id; the root holds the method, canonical path (no query), route, org, decision, deciding line
    and status codes; the upstream's traceparent names the forward span; the collector's credential is sent."""
    settings = tracing(collector, headers={"authorization": "Bearer collector-secret"}, service_name="edge")
    async with bare_serving(upstream, tmp_path, tracing=settings) as gateway:
        status, headers, _ = await gateway.call(
            "GET", "/api/orders/./7?sig=s3cr3t", token=gateway.tokens["viewer"], org="acme"
        )
        assert status == 200
        spans = await collector.wait_for(5)
    assert len(spans) == 5
    assert {span.trace_id for span in spans} == {spans[0].trace_id}
    root = collector.one("gateway proxy")
    assert (root.kind, root.parent_id, root.status) == ("SERVER", "", "UNSET")
    stages = children(spans, root)
    assert [(span.name, span.kind, span.status) for span in stages] == [
        ("authenticate", "INTERNAL", "UNSET"),
        ("resolve", "INTERNAL", "UNSET"),
        ("enforce", "INTERNAL", "UNSET"),
        ("forward", "CLIENT", "UNSET"),
    ]
    for earlier, later in itertools.pairwise(stages):
        assert earlier.end_ns <= later.start_ns
    assert root.start_ns <= stages[0].start_ns and stages[-1].end_ns <= root.end_ns
    assert root.attributes == {
        "http.request.method": "GET",
        "url.path": "/api/orders/7",
        "http.route": "/api",
        "gateway.org": "acme",
        "gateway.decision": "allow",
        "gateway.rule": "p, viewer, *, /*, GET, allow",
        "gateway.request_id": headers["x-request-id"],
        "http.response.status_code": 200,
        "gateway.upstream.status_code": 200,
    }
    port = int(upstream.url.rsplit(":", 1)[1])
    assert stages[-1].attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.response.status_code": 200,
    }
    assert root.resource["service.name"] == "edge"
    assert traceparent_parts(upstream.last.header("traceparent")) == (root.trace_id, stages[-1].span_id, True)
    assert not any(b"s3cr3t" in body for body in collector.bodies), "the query string is never recorded"
    assert all(sent["authorization"] == "Bearer collector-secret" for sent in collector.headers)


TRUST = [
    # trusted_proxies, trust_incoming, whether the caller (127.0.0.1) continues its trace
    (["127.0.0.1/32"], "trusted_proxies", True),
    ([], "trusted_proxies", False),
    (["10.0.0.0/8"], "trusted_proxies", False),
    (["127.0.0.1/32"], "none", False),
    ([], "all", True),
]


@pytest.mark.parametrize(("proxies", "trust", "continued"), TRUST, ids=[f"{t}-{p or 'none'}-{c}" for p, t, c in TRUST])
async def test_a_callers_trace_is_continued_only_when_trusted(
    upstream: Upstream, tmp_path: Path, collector: Collector, proxies: list[str], trust: str, continued: bool
) -> None:
    """A trusted caller's traceparent and tracestate are continued: the SERVER span is the child of the caller's
    span and the upstream receives a traceparent of the same trace, with the caller's tracestate. An untrusted
    caller's are ignored: a new trace starts, and neither its traceparent nor its tracestate reaches the
    upstream."""
    async with bare_serving(
        upstream, tmp_path, trusted_proxies=proxies, tracing=tracing(collector, trust_incoming=trust)
    ) as gateway:
        headers = {"traceparent": CALLER_TRACEPARENT, "tracestate": "vendor=opaque"}
        status, _, _ = await gateway.call("GET", "/api/x", token=gateway.tokens["viewer"], org="acme", headers=headers)
        assert status == 200
        await collector.wait_for(5)
    root = collector.one("gateway proxy")
    forward = collector.one("forward")
    trace_id, parent_id, _ = traceparent_parts(upstream.last.header("traceparent"))
    assert (trace_id, parent_id) == (root.trace_id, forward.span_id)
    assert len([name for name, _ in upstream.last.headers if name.lower() == "traceparent"]) == 1
    if continued:
        assert (root.trace_id, root.parent_id) == (TRACE, PARENT)
        assert upstream.last.header("tracestate") == "vendor=opaque"
    else:
        assert root.trace_id != TRACE and root.parent_id == ""
        assert upstream.last.header("tracestate") is None


async def test_malformed_or_repeated_traceparents_start_a_new_trace(
    upstream: Upstream, tmp_path: Path, collector: Collector
) -> None:
    """Even from a trusted caller, a traceparent that does not parse, or one sent twice, starts a new trace."""
    async with bare_serving(
        upstream, tmp_path, trusted_proxies=["127.0.0.1/32"], tracing=tracing(collector)
    ) as gateway:
        token = gateway.tokens["viewer"]
        await gateway.call("GET", "/api/x", token=token, org="acme", headers={"traceparent": "00-zz-yy-01"})
        session, url = gateway.http, gateway.url + "/api/y"
        twice = [("Authorization", f"Bearer {token}"), ("X-Org", "acme")]
        twice += [("traceparent", CALLER_TRACEPARENT), ("traceparent", f"00-{TRACE}-{'1' * 16}-01")]
        async with session.get(url, headers=twice) as response:
            assert response.status == 200
        await collector.wait_for(10)
    roots = collector.named("gateway proxy")
    assert len(roots) == 2
    assert all(root.parent_id == "" and root.trace_id != TRACE for root in roots)


REFUSALS = [
    # path, token, method, stage that stopped it, its error.type, status, SERVER span status
    ("/api/x", None, "GET", "authenticate", "unauthenticated", 401, "UNSET"),
    ("/api/x", "not-a-jwt", "GET", "authenticate", "invalid-token", 401, "UNSET"),
    ("/api/x", "viewer", "DELETE", "enforce", "forbidden", 403, "UNSET"),
    ("/down/x", "viewer", "GET", "forward", "bad-gateway", 502, "ERROR"),
    ("/nowhere", "viewer", "GET", None, None, 404, "UNSET"),
]


@pytest.mark.parametrize(
    ("path", "token", "method", "stage", "error", "status", "root_status"),
    REFUSALS,
    ids=[f"{row[5]}-{row[3]}" for row in REFUSALS],
)
async def test_refused_requests_are_traced_where_they_stopped(
    upstream: Upstream,
    tmp_path: Path,
    collector: Collector,
    path: str,
    token: str | None,
    method: str,
    stage: str | None,
    error: str | None,
    status: int,
    root_status: str,
) -> None:
    """A refused request has its SERVER span with the status it got; the stage that stopped it is the last child,
    with status ERROR and the error's slug as `error.type`; no later stage has a span. The SERVER span is an
    error only when the gateway answered 5xx (the HTTP conventions: a 4xx is the client's)."""
    async with bare_serving(upstream, tmp_path, tracing=tracing(collector)) as gateway:
        bearer = gateway.tokens.get(token, token) if token else None
        got, _, _ = await gateway.call(method, path, token=bearer, org="acme")
        assert got == status
    spans = collector.spans  # the gateway has stopped: everything was flushed
    root = collector.one("gateway proxy")
    assert (root.attributes["http.response.status_code"], root.status) == (status, root_status)
    stages = children(spans, root)
    if stage is None:
        assert stages == []
        assert "http.route" not in root.attributes
        return
    assert [span.name for span in stages] == STAGES[: STAGES.index(stage) + 1]
    assert (stages[-1].status, stages[-1].attributes["error.type"]) == ("ERROR", error)
    assert all(span.status == "UNSET" for span in stages[:-1])
    if status == 403:
        assert root.attributes["gateway.decision"] == "deny"
        assert len(root.attributes["gateway.decision_id"]) == 16
    if status >= 500:
        assert root.attributes["error.type"] == error


async def test_forward_auth_decisions_are_traced(upstream: Upstream, tmp_path: Path, collector: Collector) -> None:
    """A forward-auth decision is a SERVER span `gateway forward-auth` with the stages it ran, recording the
    method and path the proxy described and the decision; nothing is forwarded, so there is no forward span."""
    async with bare_serving(
        upstream, tmp_path, trusted_proxies=["127.0.0.1/32"], tracing=tracing(collector)
    ) as gateway:
        headers = {"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/orders/7?sig=s3cr3t"}
        status, _, _ = await gateway.call(
            "GET", "/authz/forward", token=gateway.tokens["admin"], org="acme", headers=headers
        )
        assert status == 200
        spans = await collector.wait_for(4)
    root = collector.one("gateway forward-auth")
    assert [span.name for span in children(spans, root)] == ["authenticate", "resolve", "enforce"]
    facts = root.attributes
    assert (facts["http.request.method"], facts["url.path"]) == ("DELETE", "/orders/7")
    assert (facts["http.route"], facts["gateway.org"]) == ("/authz/forward", "acme")
    assert (facts["gateway.decision"], facts["http.response.status_code"]) == ("allow", 200)


async def test_sampling_follows_the_ratio_and_a_trusted_parent(
    upstream: Upstream, tmp_path: Path, collector: Collector
) -> None:
    """With sample_ratio 0 a new trace is not recorded (the upstream still gets a traceparent, flagged not
    sampled), while a trusted caller's sampled trace is recorded: the sampler is parent-based."""
    async with bare_serving(
        upstream, tmp_path, trusted_proxies=["127.0.0.1/32"], tracing=tracing(collector, sample_ratio=0.0)
    ) as gateway:
        token = gateway.tokens["viewer"]
        assert (await gateway.call("GET", "/api/new", token=token, org="acme"))[0] == 200
        assert traceparent_parts(upstream.last.header("traceparent"))[2] is False
        headers = {"traceparent": CALLER_TRACEPARENT}
        assert (await gateway.call("GET", "/api/continued", token=token, org="acme", headers=headers))[0] == 200
        assert traceparent_parts(upstream.last.header("traceparent"))[0] == TRACE
    assert {span.trace_id for span in collector.spans} == {TRACE}
    assert collector.one("gateway proxy").attributes["url.path"] == "/api/continued"


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
async def test_with_tracing_off_nothing_is_sent(
    upstream: Upstream, tmp_path: Path, collector: Collector, enabled: bool
) -> None:
    """Off, the pipeline holds no tracer and, after the same requests and a shutdown (which would flush every
    span), the collector has received nothing; the caller's own traceparent passes through untouched, as any
    other header. On, the same requests arrive (the control case)."""
    async with bare_serving(upstream, tmp_path, tracing=tracing(collector, enabled=enabled)) as gateway:
        assert (gateway.runtime.services.pipeline.tracing is None) is not enabled
        headers = {"traceparent": CALLER_TRACEPARENT}
        for path in ("/api/x", "/nowhere", "/api/%2e%2e/x"):
            await gateway.call("GET", path, token=gateway.tokens["viewer"], org="acme", headers=headers)
        forwarded = upstream.last.header("traceparent")
    if enabled:
        assert len(collector.named("gateway proxy")) == 3
        assert forwarded != CALLER_TRACEPARENT
    else:
        assert collector.bodies == []
        assert forwarded == CALLER_TRACEPARENT


async def test_a_collector_that_is_down_cannot_hold_a_stopping_gateway(caplog: pytest.LogCaptureFixture) -> None:
    """With the collector unreachable and thousands of spans waiting, closing the tracer gives up after
    CLOSE_SECONDS (the SDK alone waits up to 30 s, past an orchestrator's grace period) and logs that the spans
    were dropped."""
    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"
    settings = TracingSettings(enabled=True, endpoint=endpoint, batch_delay_seconds=0.05)
    tracer = build_tracing(settings, TrustedProxies(()))
    assert tracer is not None
    for index in range(3000):
        trace = tracer.request("gateway proxy", {"client": ("127.0.0.1", 1), "headers": []})
        trace.finish(AuditEvent(method="GET", path=f"/api/{index}", status=200), None)
    started = time.monotonic()
    await tracer.close()
    assert time.monotonic() - started < CLOSE_SECONDS + 2
    assert "did not take the last spans" in caplog.text


def test_a_gateway_with_tracing_off_never_imports_opentelemetry() -> None:
    """The front door, the pipeline, the control plane and the runtime load no OpenTelemetry module, and
    `build_tracing` gives no tracer, unless tracing is on: a gateway installed without the otel extra works."""
    code = (
        "import sys, gateway.asgi, gateway.app, gateway.runtime\n"
        "from gateway.access.peer import TrustedProxies\n"
        "from gateway.settings import Tracing\n"
        "from gateway.tracing import build_tracing\n"
        "assert build_tracing(Tracing(), TrustedProxies(())) is None\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "[]"


def test_tracing_without_the_otel_extra_is_a_configuration_error(tmp_path: Path) -> None:
    """`gateway serve` with tracing enabled and no OpenTelemetry SDK stops at once (exit 2), naming the setting
    and the install command. The SDK is made unimportable the way Python itself allows: a None in sys.modules."""
    code = "import sys\nsys.modules['opentelemetry'] = None\nfrom gateway.cli import main\nsys.exit(main(['serve']))\n"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ["GATEWAY_TRACING__ENABLED"] = "true"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=environ, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "GATEWAY_TRACING__ENABLED" in done.stderr
    assert "pip install 'casbin-gateway[otel]'" in done.stderr
    assert "Traceback" not in done.stderr


# -- the control plane and credentials, on each database --------------------------------------------------------


async def test_control_plane_requests_are_traced_and_no_credential_is_recorded(
    db_url: str, upstream: Upstream, tmp_path: Path, collector: Collector
) -> None:
    """/auth and /admin requests get a SERVER span named by their route template, with status and route; probes
    are not traced. Across a login, an admin call and proxied calls with a bearer token, an API key and a
    cookie, no exported byte holds the password, the token, the key or the cookie."""
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), tracing=tracing(collector)
    )
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("owner@acme.test", org="acme", role="owner")
        token = await gateway.login("owner@acme.test")
        key = await gateway.key("acme", "owner@acme.test")
        assert (await gateway.call("GET", "/admin/orgs/acme", token=token))[0] == 200
        assert (await gateway.call("GET", "/healthz"))[0] == 200
        cookie = {"Cookie": "session=cookie-secret-value"}
        assert (await gateway.call("GET", "/api/a", token=token, org="acme", headers=cookie))[0] == 200
        assert (await gateway.call("GET", "/api/b", headers={"X-API-Key": key}))[0] == 200
        assert (await gateway.call("GET", "/api/c", token=key))[0] == 200
        await collector.wait_for(2 + 3 * 5)
    login = collector.one("POST /auth/login")
    assert login.kind == "SERVER"
    assert (login.attributes["http.route"], login.attributes["http.response.status_code"]) == ("/auth/login", 200)
    admin = collector.one("GET /admin/orgs/{org}")
    assert admin.attributes == {
        "http.request.method": "GET",
        "url.path": "/admin/orgs/acme",
        "http.route": "/admin/orgs/{org}",
        "http.response.status_code": 200,
    }
    assert not [span for span in collector.spans if span.attributes.get("url.path") == "/healthz"]
    assert len(collector.named("gateway proxy")) == 3
    secrets = [token, key, "cookie-secret-value", PASSWORD, token.rsplit(".", 1)[1], key[-20:]]
    exported = b"".join(collector.bodies)
    for secret in secrets:
        assert secret.encode() not in exported, "a credential reached the collector"


def test_the_readme_collector_example_and_gateway_config_agree() -> None:
    """The README's Tracing section: its gateway config loads with tracing on, and points at the port its
    collector example receives OTLP/HTTP on, at the traces path."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Tracing", 1)[1].split("\n## ", 1)[0]
    collector_yaml = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    gateway_toml = re.search(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert collector_yaml is not None and gateway_toml is not None
    settings = settings_from_mapping(tomllib.loads(gateway_toml.group(1))).tracing
    assert settings.enabled
    listening = re.search(r"http:\n\s+endpoint: 0\.0\.0\.0:(\d+)", collector_yaml.group(1))
    assert listening is not None
    assert settings.endpoint == f"http://127.0.0.1:{listening.group(1)}/v1/traces"
    assert "exporters: [debug]" in collector_yaml.group(1)
