"""Proxied traffic during a login storm: req/s and p99 of proxied requests with no logins, then while 20 clients
log in back to back (Argon2id at the production cost, m=19 MiB, t=2), and the logins' own rate, latency and how
many were shed (503 + Retry-After because every hashing slot and the queue behind them were taken).

    python bench/login_storm.py [--duration 6] [--rounds 3] [--connections 16] [--logins 20]
                                [--max-concurrent N] [--queue N] [--cpu-budget CPUS] [--niceness N]

The quiet and stormy runs alternate, `--rounds` of each, and the medians are compared, so that the machine's
drift during the run falls on both sides. The last four options set `[passwords]` (defaults: the gateway's).
Target (issue 19): proxied p99 during the storm at most 1.5x the quiet p99, proxied throughput at least 80 % of
quiet. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from proxy import BENCH_PASSWORD, BENCH_USER, LUA, ROOT, clean_up, free_port, login, seed, wait_for, wrk


def _storm(
    base: str, stop: threading.Event, latencies: list[tuple[float, float]], failures: list[int], shed: list[float]
) -> None:
    """Log in back to back until `stop`; record (finished at, seconds) per login and the time of each 503."""
    body = json.dumps({"email": BENCH_USER, "password": BENCH_PASSWORD}).encode()
    while not stop.is_set():
        request = urllib.request.Request(  # noqa: S310 - loopback
            base + "/auth/login", data=body, headers={"content-type": "application/json"}, method="POST"
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                response.read()
            finished = time.perf_counter()
            latencies.append((finished, finished - started))
        except urllib.error.HTTPError as error:
            if error.code != 503:
                failures[0] += 1
                continue
            shed.append(time.perf_counter())
            time.sleep(float(error.headers.get("retry-after", "1")) / 10)  # an impatient client: a tenth of it
        except OSError:
            failures[0] += 1


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=6, help="seconds of each quiet and each stormy run")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/storm pairs, alternated")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--logins", type=int, default=20, help="concurrent clients logging in")
    parser.add_argument("--max-concurrent", type=int, help="[passwords] max_concurrent")
    parser.add_argument("--queue", type=int, help="[passwords] queue")
    parser.add_argument("--niceness", type=int, help="[passwords] niceness")
    parser.add_argument("--cpu-budget", type=float, help="[passwords] cpu_budget")
    parser.add_argument("--memory-kib", type=int, help="[passwords] memory_kib (a cheap hash shows the rest)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="gw-logins-"))
    chosen = {
        "max_concurrent": args.max_concurrent,
        "queue": args.queue,
        "niceness": args.niceness,
        "cpu_budget": args.cpu_budget,
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

        latencies: list[tuple[float, float]] = []
        failures: list[int] = [0]
        shed: list[float] = []
        quiet: list[dict[str, float]] = []
        stormy: list[dict[str, float]] = []
        windows: list[tuple[float, float]] = []
        for _ in range(args.rounds):  # alternate, so that drift in the machine falls on both sides alike
            quiet.append(wrk(base, "", headers, **load))  # type: ignore[arg-type]
            stop = threading.Event()
            clients = [
                threading.Thread(target=_storm, args=(base, stop, latencies, failures, shed))
                for _ in range(args.logins)
            ]
            for client in clients:
                client.start()
            try:
                # The storm builds up under proxied traffic (unmeasured), so that the measured run sees the steady
                # state of both, not a gateway that was hashing at its idle allowance a moment before.
                wrk(base, "", headers, **{**load, "duration": 1})  # type: ignore[arg-type]
                begun = time.perf_counter()
                stormy.append(wrk(base, "", headers, **load))  # type: ignore[arg-type]
                windows.append((begun, time.perf_counter()))
            finally:
                stop.set()
                for client in clients:
                    client.join()
        heading = f"{'proxied':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        print(f"{heading}   (medians of {args.rounds} rounds)")
        summary = {}
        for name, runs in (("no logins", quiet), (f"{args.logins} logging in", stormy)):
            row = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99", "errors")}
            summary[name] = row
            print(f"{name:16} {row['rps']:>8.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} {row['errors']:>8.0f}")
        print(
            "rounds, req/s quiet/storm: "
            + ", ".join(f"{q['rps']:.0f}/{s['rps']:.0f}" for q, s in zip(quiet, stormy, strict=True))
            + "; p99 ms quiet/storm: "
            + ", ".join(f"{q['p99']:.1f}/{s['p99']:.1f}" for q, s in zip(quiet, stormy, strict=True))
        )
        measured = sum(end - begin for begin, end in windows)

        def inside(at: float) -> bool:
            return any(begin <= at <= end for begin, end in windows)

        during = [seconds for at, seconds in latencies if inside(at)]
        refused = sum(1 for at in shed if inside(at))
        print(
            f"logins during the measured runs: {len(during)} in {measured:.0f} s ({len(during) / measured:.1f}/s), "
            f"p50 {_percentile(during, 0.5) * 1000:.0f} ms, p99 {_percentile(during, 0.99) * 1000:.0f} ms, "
            f"{refused} shed (503); in all {len(latencies)} logins, {len(shed)} shed, {failures[0]} failed otherwise"
        )
        calm, storm = summary["no logins"], summary[f"{args.logins} logging in"]
        p99_ratio = storm["p99"] / calm["p99"] if calm["p99"] else float("nan")
        rps_ratio = storm["rps"] / calm["rps"] if calm["rps"] else float("nan")
        print(f"proxied p99 during the storm: {p99_ratio:.2f}x quiet (target <= 1.5x)")
        print(f"proxied req/s during the storm: {rps_ratio:.2f} of quiet (target >= 0.80)")
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
