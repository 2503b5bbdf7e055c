"""Proxied latency on a replica while 20 changes a second arrive, against quiet, at 300k lines.

    python bench/churn.py [--rate 20] [--duration 20] [--rounds 1] [--connections 16]
                          [--database postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

Two `gateway serve` processes (replicas A and B) on one PostgreSQL database holding bench/scale.py's scenario
(10,000 orgs, 100,000 members, 300,046 lines) plus 2,000 API keys. wrk drives proxied requests at B (a member of
`acme`, a new path each time). Each round measures B quiet, then while a writer makes `--rate` changes a second
through A's admin API, in a repeating mix of five: a membership's role changed, a `p` line added to an org, a
membership changed again, that line removed, a key revoked (40 % memberships, 40 % lines, 20 % keys). B learns of
each by LISTEN/NOTIFY (polling is 30 s) and applies it from the change log. Prints req/s, p50, p99 and B's CPU per
request for both phases, the writer's achieved rate and latency, and, from B's log, how many state versions it
applied as deltas and how many times it rebuilt in full while loaded, with the deltas' own time.

The benchmark creates and drops its own database (generating the scenario takes about a minute). Needs `wrk`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from proxy import BENCH_PASSWORD, BENCH_USER, LUA, ROOT, clean_up, cpu_seconds, free_port, login, wait_for, wrk
from replicas import ROOT_USER, _call, _database, configure
from scale import ORGS, ROLES_PER_ORG, USERS, generate, org_of_user, slug
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from gateway.db.engine import create_engine, session_factory
from gateway.db.migrate import upgrade
from gateway.db.models import ApiKey, Membership, Organization, utcnow

KEYS = 2_000


async def _add_keys(url: str) -> list[tuple[str, str, str]]:
    """`KEYS` live keys of members of small orgs, written as rows (never used to sign in, only revoked):
    (org slug, owner's user id, key id)."""
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        rows = (
            await session.execute(
                select(Membership.user_id, Membership.org_id, Organization.slug)
                .join(Organization, Organization.id == Membership.org_id)
                .where(Organization.slug != slug(0), Organization.slug.like("org-%"))
                .order_by(Membership.user_id)
                .limit(KEYS)
            )
        ).all()
        now = utcnow()
        keys = [(row.slug, row.user_id, f"churn{i:06d}") for i, row in enumerate(rows)]
        await session.execute(
            insert(ApiKey),
            [
                {
                    "id": key_id,
                    "org_id": row.org_id,
                    "user_id": user_id,
                    "name": "churn",
                    "key_hash": secrets.token_hex(32),
                    "last4": "0000",
                    "scopes": "[]",
                    "allowed_ips": "[]",
                    "created_at": now,
                }
                for (_, user_id, key_id), row in zip(keys, rows, strict=True)
            ],
        )
        await session.commit()
    await engine.dispose()
    return keys


def _post(url: str, token: str, body: dict[str, object]) -> list[dict[str, object]]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        answer: list[dict[str, object]] = json.load(response)
        return answer


class Writer(threading.Thread):
    """Changes through replica A's admin API at `rate` a second: paced by the clock, not by the answers (each is
    sent on time by one of `parallel` threads, so a slow answer does not lower the rate)."""

    def __init__(
        self, base: str, token: str, rate: float, keys: list[tuple[str, str, str]], seed: int, parallel: int = 16
    ) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.rate, self.keys, self.parallel = base, token, rate, keys, parallel
        self.rng = random.Random(seed)
        self.choosing = threading.Lock()
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self.roles: dict[int, str] = {}
        self.lines: collections.deque[tuple[str, int]] = collections.deque()
        self.serial = 0
        self.elapsed = 0.0

    def _membership(self) -> tuple[str, int]:
        with self.choosing:
            i = self.rng.randrange(USERS)
            old = self.roles.get(i, f"r{i % ROLES_PER_ORG}")
            new = f"r{(int(old[1:]) + 1 + self.rng.randrange(ROLES_PER_ORG - 1)) % ROLES_PER_ORG}"
            self.roles[i] = new
        url = f"{self.base}/admin/orgs/{slug(org_of_user(i))}/members/u{i}@scale.test"
        return "membership", _call(url, "PATCH", self.token, {"role": new})

    def _line_added(self) -> tuple[str, int]:
        with self.choosing:
            self.serial += 1
            org = slug(self.rng.randrange(1, ORGS))
            line = f"p, r{self.rng.randrange(ROLES_PER_ORG)}, {org}, /api/churn/{self.serial}/*, GET, allow"
        stored = _post(f"{self.base}/admin/orgs/{org}/policies", self.token, {"lines": [line]})
        self.lines.append((org, int(stored[0]["id"])))  # type: ignore[call-overload]
        return "line added", 200

    def _line_removed(self) -> tuple[str, int]:
        try:
            org, line_id = self.lines.popleft()
        except IndexError:  # the line it would remove is still being added
            return self._line_added()
        return "line removed", _call(f"{self.base}/admin/orgs/{org}/policies/{line_id}", "DELETE", self.token)

    def _key_revoked(self) -> tuple[str, int]:
        org, user_id, key_id = self.keys.pop()
        url = f"{self.base}/admin/orgs/{org}/members/{user_id}/keys/{key_id}"
        return "key revoked", _call(url, "DELETE", self.token)

    def _one(self, change: Callable[[], tuple[str, int]]) -> None:
        sent = time.perf_counter()
        try:
            kind, status = change()
        except OSError as exc:  # urllib's HTTPError included
            kind, status = "failed", 0
            self.failures.append(str(exc))
        if status >= 300:
            self.failures.append(f"{kind}: {status}")
        self.latencies.setdefault(kind, []).append(time.perf_counter() - sent)

    def run(self) -> None:
        mix = (self._membership, self._line_added, self._membership, self._line_removed, self._key_revoked)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            n = 0
            while not self.stop.wait(max(0.0, started + n / self.rate - time.perf_counter())):
                pool.submit(self._one, mix[n % len(mix)])
                n += 1
            self.elapsed = time.perf_counter() - started  # those in flight finish after this


APPLIED = re.compile(r"policy version \d+ applied: (\d+) change\(s\) in ([\d.]+) ms \(([\d.]+) ms CPU\)")
BUILT = re.compile(r"policy version \d+ built: \d+ lines in ([\d.]+) ms")
FULL = re.compile(r"policy version \d+: (.*); rebuilding in full")


def _replica_log(text: str) -> dict[str, object]:
    applied = [(int(n), float(wall), float(cpu)) for n, wall, cpu in APPLIED.findall(text)]
    return {
        "applied": len(applied),
        "changes": sum(n for n, _, _ in applied),
        "walls": sorted(wall for _, wall, _ in applied),
        "cpus": sorted(cpu for _, _, cpu in applied),
        "built": [float(ms) for ms in BUILT.findall(text)],
        "why": FULL.findall(text),
    }


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="changes a second through replica A")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="quiet/loaded pairs, alternating")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    name = "gw_churn_" + secrets.token_hex(4)
    asyncio.run(_database(args.database, name, create=True))
    db = make_url(args.database).set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="gw-churn-"))
    children: list[subprocess.Popen[bytes]] = []
    log = (work / "a.log").open("w")
    try:
        upgrade(db)
        asyncio.run(generate(db))
        keys = asyncio.run(_add_keys(db))
        up_port, ports = free_port(), [free_port(), free_port()]
        upstream_url = f"http://127.0.0.1:{up_port}"
        env = configure(work, db, upstream_url, extra='log_level = "INFO"\n')
        b_log_path = work / "b.log"
        b_log = b_log_path.open("w")
        serve = [sys.executable, "-m", "gateway.cli", "serve", "--port"]
        children += [
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
            subprocess.Popen([*serve, str(ports[0])], cwd=ROOT, env=env, stderr=log),
            subprocess.Popen([*serve, str(ports[1])], cwd=ROOT, env=env, stderr=b_log),
        ]
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        wait_for(upstream_url + "/")
        for base in (a, b):
            wait_for(base + "/healthz", timeout=120)
        time.sleep(1)  # let both replicas connect their listeners
        root = login(a, ROOT_USER, BENCH_PASSWORD)
        headers = {"Authorization": f"Bearer {login(b, BENCH_USER, BENCH_PASSWORD)}", "X-Org": "acme"}
        script = work / "paths.lua"
        script.write_text(LUA)
        load = {"duration": args.duration, "connections": args.connections, "script": script, "pids": [children[2].pid]}
        with urllib.request.urlopen(b + "/readyz", timeout=5) as response:  # noqa: S310 - loopback
            lines = json.load(response)["policy_rules"]
        wrk(b, "", headers, **{**load, "duration": 3})  # type: ignore[arg-type]

        print(
            f"replica B at {lines:,} lines; wrk -c{args.connections}, {args.duration} s a phase; writer: "
            f"{args.rate:g} changes/s through replica A's admin API"
        )
        print(f"{'':28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}")
        for round_ in range(args.rounds):
            quiet = wrk(b, "", headers, **load)  # type: ignore[arg-type]
            offset = b_log_path.stat().st_size
            writer = Writer(a, root, args.rate, keys, seed=round_)
            cpu = cpu_seconds([children[1].pid]), cpu_seconds([children[2].pid]), os.times()
            writer.start()
            try:
                busy = wrk(b, "", headers, **load)  # type: ignore[arg-type]
            finally:
                writer.stop.set()
                writer.join()
            used = (
                cpu_seconds([children[1].pid]) - cpu[0],
                cpu_seconds([children[2].pid]) - cpu[1],
                sum(os.times()[:2]) - sum(cpu[2][:2]),
            )
            time.sleep(1)  # the last notifications
            b_log.flush()
            with b_log_path.open() as text:
                text.seek(offset)
                seen = _replica_log(text.read())
            for label, run in (("quiet", quiet), (f"{args.rate:g} changes/s", busy)):
                print(
                    f"{label:28} {run['rps']:>8.0f} {run['p50']:>8.2f} {run['p99']:>8.2f} {run['errors']:>8.0f} "
                    f"{run['cpu_us']:>11.0f}"
                )
            every = sorted(t for times in writer.latencies.values() for t in times)
            print(
                f"  writer: {len(every)} changes in {writer.elapsed:.1f} s ({len(every) / writer.elapsed:.1f}/s: "
                + ", ".join(f"{len(t)} {kind}" for kind, t in sorted(writer.latencies.items()))
                + f"); admin call p50 {_p(every, 0.5) * 1000:.0f} ms, p99 {_p(every, 0.99) * 1000:.0f} ms; "
                f"{len(writer.failures)} failed{': ' + writer.failures[0] if writer.failures else ''}"
            )
            walls, cpus = seen["walls"], seen["cpus"]
            built = seen["built"]
            print(
                f"  replica B meanwhile: {seen['applied']} runs applied as deltas ({seen['changes']} changes), "
                f"wall p50 {_p(walls, 0.5):.1f} ms p99 {_p(walls, 0.99):.1f} ms, CPU p50 {_p(cpus, 0.5):.1f} ms "
                f"p99 {_p(cpus, 0.99):.1f} ms; {len(built)} full rebuilds"  # type: ignore[arg-type]
                + (f" ({', '.join(f'{ms:.0f} ms' for ms in built)}; {'; '.join(set(seen['why']))})" if built else "")
            )
            print(
                f"  CPU while loaded: replica A {used[0]:.1f} s, replica B {used[1]:.1f} s (its deltas "
                f"{sum(cpus) / 1000:.1f} s), the writer {used[2]:.1f} s, over {writer.elapsed:.0f} s on "
                f"{os.cpu_count()} cores"
            )
            print(f"  busy/quiet: throughput {busy['rps'] / quiet['rps']:.2f}, p99 {busy['p99'] / quiet['p99']:.2f}x")
        print(f"everything (wrk, upstream, both replicas, PostgreSQL, the writer) shares {os.cpu_count()} cores")
        b_log.close()
    finally:
        clean_up(children, log, work)
        asyncio.run(_database(args.database, name, create=False))


if __name__ == "__main__":
    main()
