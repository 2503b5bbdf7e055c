"""What tracing costs the data plane: the full gateway with tracing off, on for every request, and on with 10% of
traces sampled, exporting to a local OTLP/HTTP receiver.

    python bench/tracing.py [--duration 10] [--connections 32] [--rounds 2] [--baseline DIR]

Starts, each in its own process: the fast upstream of bench/proxy.py, an OTLP/HTTP receiver (aiohttp; it decodes
every export as a collector does and counts the spans of each service), and three `gateway serve` processes on one
SQLite database that differ only in `[tracing]`. wrk drives each with the same load (JWT + org + Casbin + forward +
audit, a different path every request) in alternating rounds, so machine noise hits all of them. Prints req/s, p50,
p99 and CPU per request (the gateway process, its exporter thread included), each against tracing off, then the
spans received per traced request once the gateways have stopped (and flushed): 5 when every request is traced,
fewer when the exporter's queue overflowed and dropped spans. `--baseline DIR` adds the gateway of another
checkout (`git archive <commit> | tar -x -C DIR`, e.g. the commit before tracing) on the same database: what
tracing off costs against no tracing code at all.

Needs `wrk` and the otel extra (`pip install -e '.[otel]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from proxy import BENCH_PASSWORD, BENCH_USER, LUA, ROOT, clean_up, free_port, login, measure, seed, table, wait_for

SERVICES = {"on": "bench-every-request", "on, 10% sampled": "bench-sampled"}


def run_receiver(port: int) -> None:
    """POST /v1/traces: decode, count spans per service.name, answer as a collector does; GET /count: the counts."""
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    spans: dict[str, int] = {}
    answer = ExportTraceServiceResponse().SerializeToString()

    async def export(request: web.Request) -> web.Response:
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(await request.read())
        for resource_spans in decoded.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
            service = names[0] if names else ""
            spans[service] = spans.get(service, 0) + sum(len(scope.spans) for scope in resource_spans.scope_spans)
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def count(_: web.Request) -> web.Response:
        return web.json_response(spans)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/traces", export)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def proxied_requests(base: str) -> int:
    """Proxied requests the gateway has answered so far (its own /metrics)."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310 - loopback URL we built
        text = response.read().decode()
    counted = re.findall(r'^gateway_requests_total\{[^}]*route="/api"[^}]*\} (\S+)$', text, re.MULTILINE)
    return sum(int(float(value)) for value in counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="also run the gateway of this checkout (no [tracing])")
    parser.add_argument("--role", choices=["receiver"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        return run_receiver(args.port)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="gw-bench-tracing-"))
    up_port, receiver_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    receiver = f"http://127.0.0.1:{receiver_port}"
    config = (
        f'database_url = "sqlite+aiosqlite:///{work / "bench.db"}"\nlog_level = "INFO"\n'
        f'audit_log = "{work / "audit.jsonl"}"\n'
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream_url}"\n'
    )
    tracing = {
        "off": "",
        "on": f'[tracing]\nenabled = true\nendpoint = "{receiver}/v1/traces"\nservice_name = "{SERVICES["on"]}"\n',
        "on, 10% sampled": (
            f'[tracing]\nenabled = true\nendpoint = "{receiver}/v1/traces"\n'
            f'service_name = "{SERVICES["on, 10% sampled"]}"\nsample_ratio = 0.1\n'
        ),
    }
    for index, extra in enumerate(tracing.values()):
        (work / f"gateway-{index}.toml").write_text(config + extra)
    seed({**os.environ, "GATEWAY_CONFIG": str(work / "gateway-0.toml")})
    me = [sys.executable, __file__]
    log = (work / "gateway.log").open("w")
    children = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("proxy.py")), "--role", "upstream", "--port", str(up_port)]
        ),
        subprocess.Popen([*me, "--role", "receiver", "--port", str(receiver_port)]),
    ]
    gateways: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    runs = [(name, ROOT, work / f"gateway-{index}.toml") for index, name in enumerate(tracing)]
    if args.baseline is not None:
        runs.insert(0, ("baseline", args.baseline.resolve(), work / "gateway-0.toml"))
    try:
        for name, checkout, config_file in runs:
            port = free_port()
            env = {**os.environ, "GATEWAY_CONFIG": str(config_file), "PYTHONPATH": str(checkout)}
            child = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], cwd=checkout, env=env, stderr=log
            )
            children.append(child)
            gateways[name] = (f"http://127.0.0.1:{port}", child)
            # One at a time: the first start stores the signing key. Gateways that race to store their own on
            # an empty database can miss one another's key (one that reads the keys before another commits its
            # own, and the state version after, never reloads them) and then refuse tokens the other signed.
            wait_for(gateways[name][0] + "/healthz")
        wait_for(upstream_url + "/")
        wait_for(receiver + "/count")
        token = login(gateways["off"][0], BENCH_USER, BENCH_PASSWORD)
        script = work / "paths.lua"
        script.write_text(LUA)
        load = {"duration": args.duration, "connections": args.connections, "script": script}
        full = {"Authorization": f"Bearer {token}", "X-Org": "acme"}

        print("== the full gateway (JWT + org + Casbin + forward + audit), tracing off and on, 1 process each")
        best = measure(
            {name: (base, "", full, [child.pid]) for name, (base, child) in gateways.items()}, load, args.rounds
        )
        table(best)
        off = best["off"]
        if "baseline" in best:
            base = best["baseline"]
            print(
                f"tracing off: {off['rps'] / base['rps']:.2f} of the baseline's throughput, "
                f"p50 {off['p50'] - base['p50']:+.2f} ms, p99 {off['p99'] - base['p99']:+.2f} ms, "
                f"CPU per request {off['cpu_us'] - base['cpu_us']:+.0f} us"
            )
        for name in ("on", "on, 10% sampled"):
            run = best[name]
            print(
                f"tracing {name}: {run['rps'] / off['rps']:.2f} of the throughput with it off, "
                f"p50 {run['p50'] - off['p50']:+.2f} ms, p99 {run['p99'] - off['p99']:+.2f} ms, "
                f"CPU per request {run['cpu_us'] - off['cpu_us']:+.0f} us"
            )
        served = {name: proxied_requests(gateways[name][0]) for name in SERVICES}
        for name in SERVICES:  # SIGTERM: the gateway drains, then flushes its spans before it exits
            child = gateways[name][1]
            child.terminate()
            child.wait(timeout=60)
        with urllib.request.urlopen(receiver + "/count", timeout=5) as response:  # noqa: S310 - loopback
            received: dict[str, int] = json.load(response)
        for name, service in SERVICES.items():
            spans = received.get(service, 0)
            print(
                f"tracing {name}: {spans} spans received for {served[name]} requests "
                f"({spans / max(served[name], 1):.2f} per request)"
            )
        log.flush()
        dropped = (work / "gateway.log").read_text().count("Queue full, dropping Span")
        print(f"the SDK's 'Queue full, dropping Span' warnings in the gateways' log: {dropped}")
        print(
            f"\n{args.rounds} alternating rounds of {args.duration}s, {args.connections} connections, best of each; "
            f"everything shares {os.cpu_count()} cores with the upstream, the receiver and wrk"
        )
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
