"""Changes applied as deltas on a replica at 300k lines, against the full rebuild they replace, in one run.

    python bench/deltas.py [--changes 200] [--database URL]

The scenario is bench/scale.py's shape, built in memory: 10,000 orgs; 100,000 users, each a member of one org
(the largest has 10,000 members); 10 custom roles per org, each inheriting `member` and granting one path
(100,000 `p` lines, 100,000 role links, 100,000 memberships: 300,000 lines); 3 superadmins; 20,000 API keys. The
replica's decision cache is warmed with 50,000 decisions, and 200 more are made after every change.

Measured per change, through `HotState.reload` with a run of one change (what a replica does when notified),
for a membership change, a `p` line added and a key revoked: wall time and CPU time (p50, p99), against the full
rebuild. With `--database`, a change log entry is also written and read back there, to show the read's cost.
Target (issue 14): <= 50 ms p99 per change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import statistics
import time
from pathlib import Path

from gateway.policy import HotState, KeyRecord, OrgRef, StateRows
from gateway.policy.rules import Rule

with contextlib.suppress(ImportError):  # a commit from before the change log: only scenario() runs there (memory.py)
    from gateway.policy.delta import Change, ChangeRun, KeyChange, LineChange, MemberChange

ROOT = Path(__file__).resolve().parents[1]
ORGS = 10_000
USERS = 100_000
BIG_ORG_MEMBERS = 10_000
ROLES_PER_ORG = 10
KEYS = 20_000


def slug(i: int) -> str:
    return f"org-{i:05d}"


def org_of_user(i: int) -> int:
    return 0 if i < BIG_ORG_MEMBERS else 1 + (i - BIG_ORG_MEMBERS) % (ORGS - 1)


def user(i: int) -> str:
    return f"user:00000000-0000-4000-8000-{i:012d}"


def scenario() -> tuple[StateRows, dict[int, str]]:
    stored: list[Rule] = []
    for o in range(ORGS):
        for k in range(ROLES_PER_ORG):
            stored.append(Rule("p", (f"r{k}", slug(o), f"/svc{k}/*", "*", "allow")))
            stored.append(Rule("g", (f"r{k}", "member", slug(o))))
    stored += [Rule("g", (user(USERS + i), "superadmin", "*")) for i in range(3)]
    roles = {i: f"r{i % ROLES_PER_ORG}" for i in range(USERS)}
    joined = [Rule("g", (user(i), roles[i], slug(org_of_user(i)))) for i in range(USERS)]
    keys = tuple(
        KeyRecord(
            key_id=f"key{i}",
            key_hash="0" * 64,
            user_id=user(i).removeprefix("user:"),
            org=slug(org_of_user(i)),
            scopes=(),
            expires_at=None,
        )
        for i in range(KEYS)
    )
    rows = StateRows(
        rules=tuple(stored + joined),
        orgs=tuple(OrgRef(slug(o), slug(o)) for o in range(ORGS)),
        version=1,
        keys=keys,
        # bench/memory.py builds these rows on commits from before the change log too, where there is no such field
        **({"memberships_from": len(stored)} if "memberships_from" in StateRows.__dataclass_fields__ else {}),
    )
    return rows, roles


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _traffic(rng: random.Random, count: int) -> list[tuple[str, str, str, str]]:
    out = []
    for _ in range(count):
        i = rng.randrange(USERS)
        out.append((user(i), slug(org_of_user(i)), f"/svc{rng.randrange(ROLES_PER_ORG)}/x", "GET"))
    return out


async def run(changes: int, database: str | None) -> None:
    rng = random.Random(14)
    rows, roles = scenario()
    lines = len(rows.rules)

    # The full rebuild, as a replica does it today for every change (in a worker thread, the collector paused).
    full_wall: list[float] = []
    full_cpu: list[float] = []
    replica = HotState(ROOT / "model.conf")
    for attempt in range(3):
        state = StateRows(**{**_fields(rows), "version": rows.version + attempt})

        async def version(at: int = state.version) -> int:
            return at

        async def fetch(state: StateRows = state) -> StateRows:
            return state

        cpu, wall = time.process_time(), time.perf_counter()
        await replica.reload(version, fetch, force=True)
        full_wall.append(time.perf_counter() - wall)
        full_cpu.append(time.process_time() - cpu)
    current = replica.version
    for request in _traffic(rng, 50_000):
        replica.decide(*request)

    keys_left = [f"key{i}" for i in range(KEYS)]
    rng.shuffle(keys_left)
    added = 0

    def membership() -> Change:
        i = rng.randrange(USERS)
        old, new = roles[i], f"r{rng.randrange(ROLES_PER_ORG)}"
        if new == old:
            new = "viewer"
        roles[i] = new
        return MemberChange(user(i), slug(org_of_user(i)), old, new)

    def line() -> Change:
        nonlocal added
        added += 1
        o = rng.randrange(ORGS)
        return LineChange(
            Rule("p", (f"r{rng.randrange(ROLES_PER_ORG)}", slug(o), f"/new{added}/*", "GET", "allow")), True
        )

    def revoke() -> Change:
        return KeyChange(keys_left.pop(), None)

    results: dict[str, tuple[list[float], list[float]]] = {}
    for name, make in (("membership change", membership), ("line added", line), ("key revoked", revoke)):
        walls: list[float] = []
        cpus: list[float] = []
        for _ in range(changes):
            current += 1
            change = make()

            async def version(at: int = current) -> int:
                return at

            async def full() -> StateRows:
                raise AssertionError("rebuilt in full")

            async def log(after: int, at: int = current, change: Change = change) -> ChangeRun:
                return ChangeRun(at, (change,))

            cpu, wall = time.process_time(), time.perf_counter()
            assert await replica.reload(version, full, fetch_changes=log)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            for request in _traffic(rng, 200):
                replica.decide(*request)
        results[name] = (walls, cpus)

    print(
        f"replica at {lines:,} lines ({ORGS:,} orgs, {USERS:,} members, {KEYS:,} keys), {changes} changes of each kind"
    )
    print(f"{'':24}{'wall p50':>10}{'wall p99':>10}{'CPU p50':>10}{'CPU p99':>10}")
    p50, p99 = _percentiles(full_wall)
    c50, c99 = _percentiles(full_cpu)
    print(f"{'full rebuild':24}{p50 * 1000:>8.0f}ms{p99 * 1000:>8.0f}ms{c50 * 1000:>8.0f}ms{c99 * 1000:>8.0f}ms")
    worst = 0.0
    for name, (walls, cpus) in results.items():
        p50, p99 = _percentiles(walls)
        c50, c99 = _percentiles(cpus)
        worst = max(worst, p99)
        print(f"{name:24}{p50 * 1000:>8.1f}ms{p99 * 1000:>8.1f}ms{c50 * 1000:>8.1f}ms{c99 * 1000:>8.1f}ms")
    print(f"target p99 <= 50 ms per change: {'met' if worst <= 0.050 else 'NOT met'} ({worst * 1000:.1f} ms)")
    if database:
        await _log_read(database)


def _fields(rows: StateRows) -> dict[str, object]:
    return {name: getattr(rows, name) for name in rows.__dataclass_fields__}


async def _log_read(url: str) -> None:
    """Write one change log entry and read the run back, as a replica does when notified."""
    from gateway.db import changes
    from gateway.db.engine import bump_version, create_engine, session_factory
    from gateway.db.migrate import upgrade
    from gateway.policy.store import PolicyStore

    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    store = PolicyStore(session_factory(engine))
    timings = []
    try:
        for _ in range(50):
            async with store.sessions() as session:
                version = await bump_version(session, [changes.key_stopped("bench")])
                await session.commit()
            started = time.perf_counter()
            assert await store.changes(version - 1) is not None
            timings.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    p50, p99 = _percentiles(timings)
    kind = url.split(":")[0]
    print(f"reading a one-entry run from the change log ({kind}): p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--database", help="also time the change log's read on this (migrated or empty) database")
    args = parser.parse_args()
    gc.collect()
    asyncio.run(run(args.changes, args.database))


if __name__ == "__main__":
    main()
