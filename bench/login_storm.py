"""Proxied traffic during a login storm: req/s and p99 of proxied requests with no logins, then while 20 clients
log in back to back (Argon2id at the production cost, m=19 MiB, t=2), and the logins' own rate, latency and how
many were shed (503 + Retry-After because every hashing slot and the queue behind them were taken).

    python bench/login_storm.py [--duration 10] [--connections 16] [--logins 20]
                                [--max-concurrent N] [--queue N] [--niceness N]

The last three set `[passwords]` (defaults: the gateway's). Target (issue 19): proxied p99 during the storm at
most 1.5x the quiet p99, proxied throughput at least 80 % of quiet. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from proxy import BENCH_PASSWORD, BENCH_USER, LUA, ROOT, clean_up, free_port, login, seed, wait_for, wrk


def _storm(base: str, stop: threading.Event, latencies: list[float], failures: list[int], shed: list[int]) -> None:
    body = json.dumps({"email": BENCH_USER, "password": BENCH_PASSWORD}).encode()
    while not stop.is_set():
        request = urllib.request.Request(  # noqa: S310 - loopback
            base + "/auth/login", data=body, headers={"content-type": "application/json"}, method="POST"
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                response.read()
            latencies.append(time.perf_counter() - started)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                failures[0] += 1
                continue
            shed[0] += 1
            time.sleep(float(error.headers.get("retry-after", "1")) / 10)  # an impatient client: a tenth of it
        except OSError:
            failures[0] += 1


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--logins", type=int, default=20, help="concurrent clients logging in")
    parser.add_argument("--max-concurrent", type=int, help="[passwords] max_concurrent")
    parser.add_argument("--queue", type=int, help="[passwords] queue")
    parser.add_argument("--niceness", type=int, help="[passwords] niceness")
    parser.add_argument("--memory-kib", type=int, help="[passwords] memory_kib (a cheap hash shows the rest)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="gw-logins-"))
    chosen = {
        "max_concurrent": args.max_concurrent,
        "queue": args.queue,
        "niceness": args.niceness,
        "memory_kib": args.memory_kib,
    }
    passwords = "".join(f"{name} = {value}\n" for name, value in chosen.items() if value is not None)
    db = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    up_port, gw_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    (work / "gateway.toml").write_text(
        f'database_url = "{db}"\nmodel_path = "{ROOT / "model.conf"}"\naudit_log = "off"\n'
        f'[login]\nfree_failures = 1000\n[passwords]\n{passwords}[[routes]]\nprefix = "/api"\n'
        f'upstream = "{upstream_url}"\n'
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    seed(env)
    log = (work / "gateway.log").open("w")
    children = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("proxy.py")), "--role", "upstream", "--port", str(up_port)]
        ),
        subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(gw_port)], cwd=ROOT, env=env, stderr=log
        ),
    ]
    try:
        base = f"http://127.0.0.1:{gw_port}"
        wait_for(upstream_url + "/")
        wait_for(base + "/healthz")
        token = login(base, BENCH_USER, BENCH_PASSWORD)
        headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        script = work / "paths.lua"
        script.write_text(LUA)
        load = {"duration": args.duration, "connections": args.connections, "script": script, "pids": [children[1].pid]}
        wrk(base, "", headers, **{**load, "duration": 2})  # type: ignore[arg-type]
        quiet = wrk(base, "", headers, **load)  # type: ignore[arg-type]

        stop, latencies, failures, shed = threading.Event(), [], [0], [0]
        clients = [
            threading.Thread(target=_storm, args=(base, stop, latencies, failures, shed)) for _ in range(args.logins)
        ]
        for client in clients:
            client.start()
        time.sleep(1)  # let the storm build up
        try:
            stormy = wrk(base, "", headers, **load)  # type: ignore[arg-type]
        finally:
            stop.set()
            for client in clients:
                client.join()
        print(f"{'proxied':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for name, run in (("no logins", quiet), (f"{args.logins} logging in", stormy)):
            print(f"{name:16} {run['rps']:>8.0f} {run['p50']:>8.2f} {run['p99']:>8.2f} {run['errors']:>8.0f}")
        seconds = args.duration + 1
        print(
            f"logins: {len(latencies)} in ~{seconds} s ({len(latencies) / seconds:.1f}/s), "
            f"p50 {_percentile(latencies, 0.5) * 1000:.0f} ms, p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"{shed[0]} shed (503), {failures[0]} failed otherwise"
        )
        p99_ratio = stormy["p99"] / quiet["p99"] if quiet["p99"] else float("nan")
        rps_ratio = stormy["rps"] / quiet["rps"] if quiet["rps"] else float("nan")
        print(f"proxied p99 during the storm: {p99_ratio:.2f}x quiet (target <= 1.5x)")
        print(f"proxied req/s during the storm: {rps_ratio:.2f} of quiet (target >= 0.80)")
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
