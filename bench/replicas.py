"""Propagation between replicas: two gateway processes on one PostgreSQL; 100 role changes made through one
(admin API), and the time until the other enforces each, measured by polling it with proxied requests.

    python bench/replicas.py [--changes 100] [--database postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

Polling is set to 30 s, so what is measured is LISTEN/NOTIFY. The benchmark creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
from proxy import BENCH_PASSWORD, BENCH_USER, ROOT, clean_up, free_port, login, seed, wait_for
from sqlalchemy.engine import make_url

ROOT_USER = "root@acme.test"


def _call(url: str, method: str, token: str, body: dict[str, str] | None = None, **headers: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def configure(work: Path, db: str, upstream_url: str, *, extra: str = "") -> dict[str, str]:
    """Write the replicas' shared gateway.toml (`extra` lines added), seed the bench user and a superadmin; the
    environment that points `gateway` commands at it."""
    (work / "gateway.toml").write_text(
        f'database_url = "{db}"\nmodel_path = "{ROOT / "model.conf"}"\naudit_log = "off"\npolicy_poll_seconds = 30\n'
        f'{extra}[[routes]]\nprefix = "/api"\nupstream = "{upstream_url}"\n'
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    seed(env)
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "users", "create", "--email", ROOT_USER, "--superadmin"],
        cwd=ROOT,
        env=env,
        check=True,
        input=BENCH_PASSWORD + "\n",
        text=True,
        capture_output=True,
    )
    return env


async def _database(admin_url: str, name: str, create: bool) -> None:
    url = make_url(admin_url)
    connection = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, database=url.database)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--database", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = "gw_bench_" + secrets.token_hex(4)
    asyncio.run(_database(args.database, name, create=True))
    db = make_url(args.database).set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="gw-replicas-"))
    up_port, ports = free_port(), [free_port(), free_port()]
    upstream_url = f"http://127.0.0.1:{up_port}"
    env = configure(work, db, upstream_url)
    log = (work / "gateway.log").open("w")
    children = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("proxy.py")), "--role", "upstream", "--port", str(up_port)]
        ),
        *(
            subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stderr=log
            )
            for port in ports
        ),
    ]
    try:
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        wait_for(upstream_url + "/")
        for base in (a, b):
            wait_for(base + "/healthz")
        time.sleep(1)  # let both replicas connect their listeners
        member, root = login(a, BENCH_USER, BENCH_PASSWORD), login(a, ROOT_USER, BENCH_PASSWORD)
        with urllib.request.urlopen(  # noqa: S310 - loopback
            urllib.request.Request(a + "/admin/orgs/acme/members", headers={"authorization": f"Bearer {root}"}),  # noqa: S310
            timeout=10,
        ) as response:
            member_id = next(m["user_id"] for m in json.load(response)["items"] if m["email"] == BENCH_USER)
        delays = []
        for n in range(args.changes):
            role, expected = ("admin", 200) if n % 2 == 0 else ("member", 403)
            status = _call(f"{a}/admin/orgs/acme/members/{member_id}", "PATCH", root, {"role": role})
            assert status == 200, status
            changed = time.perf_counter()
            while _call(b + "/api/orders/1", "DELETE", member, **{"X-Org": "acme"}) != expected:
                if time.perf_counter() - changed > 10:
                    raise SystemExit("a change did not reach the second replica within 10 s")
            delays.append((time.perf_counter() - changed) * 1000)
        ordered = sorted(delays)
        print(f"{args.changes} changes through replica A, enforced by replica B after (LISTEN/NOTIFY, polling 30 s):")
        print(
            f"  p50 {statistics.median(ordered):.1f} ms, p99 {ordered[int(len(ordered) * 0.99) - 1]:.1f} ms, "
            f"max {ordered[-1]:.1f} ms (target: within 1 s)"
        )
    finally:
        clean_up(children, log, work)
        asyncio.run(_database(args.database, name, create=False))


if __name__ == "__main__":
    main()
