"""Throughput and latency of the full pipeline (JWT + Casbin + forward) against a bare passthrough.

    python bench/proxy.py [--duration 10] [--connections 32] [--rounds 2]

Starts, each in its own process: a fast upstream, a bare passthrough (the gateway's own aiohttp forwarding and
header hygiene, no authentication, no enforcement), and the real gateway (`gateway serve`, SQLite, audit log on).
wrk drives both with the same load in one run, a different path on every request so no cache keyed on the full
path can help, alternating rounds so machine noise hits both. Prints requests/s, p50 and p99 for each and the
ratio. Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
LUA = """
local counter = 0
local prefix = ""
init = function(args)
  prefix = args[1] or ""
end
request = function()
  counter = counter + 1
  return wrk.format("GET", prefix .. "/api/items/" .. counter .. "/" .. math.random(1, 1000000000))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- roles run in child processes -----------------------------------------------------------------------------


def run_upstream(port: int) -> None:
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_passthrough(port: int, upstream: str, *, mounted: bool) -> None:
    """The same forwarding the gateway does, minus authentication, org resolution, enforcement and audit.

    With `mounted`, the same ASGI callable is mounted at `/` in an otherwise empty Litestar app, exactly as the
    gateway mounts its pipeline: the difference between the two is the framework's cost per request.
    """
    import aiohttp
    import uvicorn
    from litestar import Litestar, asgi
    from litestar.types import Receive, Scope, Send

    from gateway.proxy.forward import Outgoing, forward, request_has_body, request_headers
    from gateway.proxy.headers import request_id_of
    from gateway.proxy.match import RouteTable
    from gateway.proxy.paths import canonical_path
    from gateway.proxy.peer import TrustedProxies, resolve_peer
    from gateway.settings import Route, Upstream

    routes = RouteTable((Route(prefix="/api", upstream=upstream),), Upstream())
    state: dict[str, aiohttp.ClientSession] = {}
    untrusted = TrustedProxies(())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["http"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["http"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        match = routes.match(canonical_path(scope["raw_path"]))
        raw = scope["headers"]
        request_id = request_id_of(raw)  # the same per-request work the gateway does
        peer = resolve_peer(scope["client"][0], "http", raw, untrusted)
        outgoing = Outgoing(
            identity=(), forwarded_for=peer.forwarded_for, scheme=peer.scheme, host=peer.host, request_id=request_id
        )
        await forward(
            state["http"],
            match,
            method=scope["method"],
            query=scope["query_string"],
            headers=request_headers(raw, keep_authorization=True, outgoing=outgoing),
            has_body=request_has_body(raw, match.route.max_body_bytes),
            receive=receive,
            send=send,
            request_id=request_id,
            extra_response_headers=[],
        )

    served: Any = app
    if mounted:
        mount = asgi("/", is_mount=True, copy_scope=False)(app)

        async def open_pool() -> None:
            state["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)

        async def close_pool() -> None:
            await state["http"].close()

        served = Litestar([mount], on_startup=[open_pool], on_shutdown=[close_pool], logging_config=None)
    uvicorn.run(
        served,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


# -- orchestration --------------------------------------------------------------------------------------------


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL we built
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means the server is up
                return
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, prefix: str, headers: dict[str, str], *, duration: int, connections: int, script: Path, pid: int
) -> dict[str, float]:
    """Drive `url` with paths `<prefix>/api/items/<n>/<random>`; return req/s, latency and CPU per request."""
    cpu_before = cpu_seconds(pid)
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url, "--", prefix], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50": _ms(out, "50%"),
        "p99": _ms(out, "99%"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
        "cpu_us": (cpu_seconds(pid) - cpu_before) / total * 1e6,
    }


def _ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


BENCH_USER, BENCH_PASSWORD = "bench@acme.test", "violet tram overture 1"


def seed(env: dict[str, str]) -> None:
    """Migrate the configured database and create acme, a member and the system policy, via the CLI."""
    for step in (
        ["migrate"],
        ["orgs", "create", "--slug", "acme", "--name", "Acme"],
        ["users", "create", "--email", BENCH_USER],
        ["members", "add", "--org", "acme", "--email", BENCH_USER, "--role", "member"],
        ["policy", "load"],
    ):
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", *step],
            cwd=ROOT,
            env=env,
            check=True,
            input=BENCH_PASSWORD + "\n",
            text=True,
            capture_output=True,
        )


def clean_up(children: list[subprocess.Popen[bytes]], log: IO[str], work: Path) -> None:
    """Stop the benchmark's processes and remove its scratch directory."""
    for child in children:
        child.terminate()
    for child in children:
        child.wait(timeout=10)
    log.close()
    shutil.rmtree(work, ignore_errors=True)


def login(base: str, email: str, password: str) -> str:
    request = urllib.request.Request(  # noqa: S310 - loopback URL we built
        base + "/auth/login",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        token: str = json.load(response)["access_token"]
        return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--database",
        help="run the gateway on this database (e.g. the scale scenario of bench/scale.py) instead of a fresh one",
    )
    parser.add_argument("--role", choices=["upstream", "passthrough", "mounted"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        return run_upstream(args.port)
    if args.role in ("passthrough", "mounted"):
        return run_passthrough(args.port, args.upstream, mounted=args.role == "mounted")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    up_port, pass_port, mount_port, gw_port = free_port(), free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    db = args.database or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    (work / "gateway.toml").write_text(
        f'database_url = "{db}"\nmodel_path = "{ROOT / "model.conf"}"\nlog_level = "INFO"\n'
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream_url}"\n'
        f'[[routes]]\nprefix = "/open"\nupstream = "{upstream_url}"\npublic = true\nstrip_prefix = true\n'
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    gateway_cli = [sys.executable, "-m", "gateway.cli"]
    seed(env)
    me = [sys.executable, __file__]
    log = (work / "gateway.log").open("w")
    children = [
        subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)]),
        subprocess.Popen([*me, "--role", "passthrough", "--port", str(pass_port), "--upstream", upstream_url]),
        subprocess.Popen([*gateway_cli, "serve", "--port", str(gw_port)], cwd=ROOT, env=env, stderr=log),
        subprocess.Popen([*me, "--role", "mounted", "--port", str(mount_port), "--upstream", upstream_url]),
    ]
    try:
        wait_for(upstream_url + "/")
        wait_for(f"http://127.0.0.1:{pass_port}/api/x")
        wait_for(f"http://127.0.0.1:{mount_port}/api/x")
        wait_for(f"http://127.0.0.1:{gw_port}/healthz")
        token = login(f"http://127.0.0.1:{gw_port}", BENCH_USER, BENCH_PASSWORD)
        script = work / "paths.lua"
        script.write_text(LUA)
        targets = {  # name: (base URL, path prefix, headers, pid of the process doing the work)
            "passthrough": (f"http://127.0.0.1:{pass_port}", "", {}, children[1].pid),
            "pass-mounted": (f"http://127.0.0.1:{mount_port}", "", {}, children[3].pid),
            "gateway-public": (f"http://127.0.0.1:{gw_port}", "/open", {}, children[2].pid),
            "gateway": (
                f"http://127.0.0.1:{gw_port}",
                "",
                {"Authorization": f"Bearer {token}", "X-Org": "acme"},
                children[2].pid,
            ),
        }
        load = {"duration": args.duration, "connections": args.connections, "script": script}
        for url, prefix, headers, pid in targets.values():  # warm-up: connection pools, per-subject caches
            wrk(url, prefix, headers, **{**load, "duration": 2}, pid=pid)  # type: ignore[arg-type]
        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, prefix, headers, pid) in targets.items():
                results[name].append(wrk(url, prefix, headers, **load, pid=pid))  # type: ignore[arg-type]
        best = {name: max(runs, key=lambda r: r["rps"]) for name, runs in results.items()}
        print(f"{'':14} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}")
        for name, r in best.items():
            print(
                f"{name:14} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>8.0f}"
                f" {r['cpu_us']:>11.0f}"
            )
        status = Path(f"/proc/{children[2].pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
        print(f"gateway RSS after the runs: {rss:.0f} MiB")
        ratio = best["gateway"]["rps"] / best["passthrough"]["rps"]
        cpu_ratio = best["passthrough"]["cpu_us"] / best["gateway"]["cpu_us"]
        print(f"gateway / passthrough throughput: {ratio:.2f} (target >= 0.75); by CPU per request: {cpu_ratio:.2f}")
        print(
            f"{args.rounds} alternating rounds of {args.duration}s, {args.connections} connections, best of each; "
            f"the proxies share {os.cpu_count()} cores with the upstream and wrk"
        )
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
