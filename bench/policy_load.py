"""`gateway policy load` of a large policy into an empty store, then again (nothing new), on SQLite and, when
reachable, PostgreSQL: wall time and lines a second, through the real CLI.

    python bench/policy_load.py [--lines 300000] [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

The file: `p` lines for 10,000 orgs with a custom role each, plus one role-inheritance `g` line per org.
Target (issue 14): 300,000 lines in at most 15 s on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, lines: int) -> None:
    with path.open("w") as out:
        written, org = 0, 0
        while written < lines:
            out.write(f"g, role{org % 97}, member, org{org}\n")
            written += 1
            for n in range(min(29, lines - written)):
                out.write(f"p, role{org % 97}, org{org}, /api/svc{n}/:id/*, GET, allow\n")
                written += 1
            org += 1


def _run(database: str, work: Path, policy: Path) -> tuple[float, float]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database, "GATEWAY_MODEL_PATH": str(ROOT / "model.conf")}
    cli = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*cli, "migrate"], cwd=work, env=env, check=True, capture_output=True)
    timings = []
    for _ in range(2):  # into an empty store, then the same file again
        started = time.perf_counter()
        out = subprocess.run([*cli, "policy", "load", str(policy)], cwd=work, env=env, check=True, capture_output=True)
        timings.append(time.perf_counter() - started)
        print("   ", out.stdout.decode().strip())
    return timings[0], timings[1]


async def _fresh_postgres(admin_url: str, name: str) -> str | None:
    parts = make_url(admin_url)
    try:
        connection = await asyncpg.connect(
            host=parts.host,
            port=parts.port or 5432,
            user=parts.username,
            password=parts.password,
            database=parts.database,
            timeout=3,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL not reachable ({exc}); SQLite only")
        return None
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return parts.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-load-"))
    policy = work / "big.csv"
    _write(policy, args.lines)
    targets = [("SQLite", f"sqlite+aiosqlite:///{work / 'load.db'}")]
    postgres = asyncio.run(_fresh_postgres(args.postgres, "gateway_bench_load"))
    if postgres:
        targets.append(("PostgreSQL", postgres))
    for name, database in targets:
        print(f"{name}: {args.lines:,} lines")
        first, again = _run(database, work, policy)
        print(f"    into an empty store {first:.1f} s ({args.lines / first:,.0f} lines/s); again {again:.1f} s")
    print("target: 300,000 lines in <= 15 s on both databases")


if __name__ == "__main__":
    main()
