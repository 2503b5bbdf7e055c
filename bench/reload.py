"""Proxied latency while the policy reloads: p99 with no reloads, then with a full reload of 10,000+ lines
triggered every second (the way a change made elsewhere arrives: the version row moves).

    python bench/reload.py [--lines 10000] [--duration 10] [--connections 16]

Reloads are built in a worker thread and swapped in one assignment; this shows what they cost the requests
being served meanwhile. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from proxy import BENCH_PASSWORD, BENCH_USER, LUA, ROOT, clean_up, free_port, login, seed, wait_for, wrk

from gateway.db.engine import create_engine, session_factory
from gateway.policy.rules import Rule
from gateway.policy.store import add_rules


async def _add_lines(url: str, count: int) -> None:
    """`count` extra lines over 1,000 orgs and 10 roles, like a busy tenant set."""
    engine = create_engine(url)
    rules = [Rule("p", (f"role-{i % 10}", f"org-{i % 1000}", f"/svc/{i}/*", "GET", "allow")) for i in range(count)]
    async with session_factory(engine)() as session:
        await add_rules(session, rules)
        await session.commit()
    await engine.dispose()


def _bumper(db_path: Path, stop: threading.Event, interval: float, counter: list[int]) -> None:
    connection = sqlite3.connect(db_path, timeout=30)
    while not stop.wait(interval):
        connection.execute("UPDATE state_version SET version = version + 1 WHERE id = 1")
        connection.commit()
        counter[0] += 1
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="gw-reload-"))
    db_path = work / "bench.db"
    db = f"sqlite+aiosqlite:///{db_path}"
    up_port, gw_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    log_path = work / "gateway.log"
    (work / "gateway.toml").write_text(
        f'database_url = "{db}"\nmodel_path = "{ROOT / "model.conf"}"\naudit_log = "off"\n'
        f'policy_poll_seconds = 0.1\nlog_level = "INFO"\n'
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream_url}"\n'
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    cli = [sys.executable, "-m", "gateway.cli"]
    seed(env)
    asyncio.run(_add_lines(db, args.lines))

    log = log_path.open("w")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("proxy.py")),
                "--role",
                "upstream",
                "--port",
                str(up_port),
            ]
        ),
        subprocess.Popen([*cli, "serve", "--port", str(gw_port)], cwd=ROOT, env=env, stderr=log),
    ]
    try:
        base = f"http://127.0.0.1:{gw_port}"
        wait_for(upstream_url + "/")
        wait_for(base + "/healthz")
        token = login(base, BENCH_USER, BENCH_PASSWORD)
        headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        script = work / "paths.lua"
        script.write_text(LUA)
        pid = children[1].pid
        load = {"duration": args.duration, "connections": args.connections, "script": script, "pids": [pid]}
        wrk(base, "", headers, **{**load, "duration": 2})  # type: ignore[arg-type]
        quiet = wrk(base, "", headers, **load)  # type: ignore[arg-type]

        stop, counter = threading.Event(), [0]
        bumper = threading.Thread(target=_bumper, args=(db_path, stop, 1.0, counter))
        bumper.start()
        try:
            busy = wrk(base, "", headers, **load)  # type: ignore[arg-type]
        finally:
            stop.set()
            bumper.join()
        time.sleep(0.5)
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:  # noqa: S310 - loopback
            ready = json.load(response)
        builds = [float(m) for m in re.findall(r"built: \d+ lines in ([\d.]+) ms", log_path.read_text())]
        print(f"policy: {ready['policy_rules']} lines; {counter[0]} reloads triggered during the second run")
        print(
            f"reload build time (worker thread): median {sorted(builds)[len(builds) // 2]:.0f} ms, "
            f"max {max(builds):.0f} ms over {len(builds)} builds"
        )
        print(f"{'':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for name, run in (("no reloads", quiet), ("reload every 1s", busy)):
            print(f"{name:16} {run['rps']:>8.0f} {run['p50']:>8.2f} {run['p99']:>8.2f} {run['errors']:>8.0f}")
    finally:
        clean_up(children, log, work)


if __name__ == "__main__":
    main()
