"""The scale scenario and the engine's figures on it.

    python bench/scale.py generate --database URL     # build the scenario (SQLite file or PostgreSQL)
    python bench/scale.py measure --database URL      # load it and print every target with its figure

The scenario: 10,000 orgs; 100,000 users, each a member of one org (the largest org has 10,000 members, the
others about 9 each); in every org 10 custom roles, each inheriting `member` and granting one path (about
100,000 `p` lines and 100,000 role `g` lines); 3 global superadmins; the system policy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import statistics
import time
from pathlib import Path

from sqlalchemy import insert

from gateway.db.engine import bump_version, create_engine, session_factory
from gateway.db.migrate import upgrade
from gateway.db.models import Membership, Organization, PolicyRule, Role, User, new_id, utcnow
from gateway.policy import HotState
from gateway.policy.rules import parse_files
from gateway.policy.store import PolicyStore, add_rules

ROOT = Path(__file__).resolve().parents[1]
ORGS = 10_000
USERS = 100_000
BIG_ORG_MEMBERS = 10_000
ROLES_PER_ORG = 10
SUPERADMINS = 3
BATCH = 5_000
# One Argon2id hash for everyone: the benchmark never logs in, and hashing 100,000 passwords would take minutes.
HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$2bCGjWmAZcC2vXD8kYgZ2Bm3yMXoiO5lP7Hn1lEDSm4"


def slug(i: int) -> str:
    return f"org-{i:05d}"


def org_of_user(i: int) -> int:
    return 0 if i < BIG_ORG_MEMBERS else 1 + (i - BIG_ORG_MEMBERS) % (ORGS - 1)


async def _insert(session, model, rows):  # type: ignore[no-untyped-def]
    for start in range(0, len(rows), BATCH):
        await session.execute(insert(model), rows[start : start + BATCH])


async def generate(url: str) -> None:
    engine = create_engine(url)
    started = time.perf_counter()
    now = utcnow()
    org_ids = [new_id() for _ in range(ORGS)]
    user_ids = [new_id() for _ in range(USERS + SUPERADMINS)]
    async with session_factory(engine)() as session:
        await add_rules(session, parse_files(sorted((ROOT / "policies").glob("*.csv"))))
        await _insert(
            session,
            Organization,
            [
                {"id": org_ids[i], "slug": slug(i), "name": f"Org {i}", "created_at": now, "version": 1}
                for i in range(ORGS)
            ],
        )
        await _insert(
            session,
            User,
            [
                {
                    "id": uid,
                    "email": f"u{i}@scale.test",
                    "password_hash": HASH,
                    "created_at": now,
                    "kind": "human",
                    "name": "",
                    "disabled": False,
                    "email_verified_at": now,
                }
                for i, uid in enumerate(user_ids)
            ],
        )
        await _insert(
            session,
            Membership,
            [
                {
                    "user_id": user_ids[i],
                    "org_id": org_ids[org_of_user(i)],
                    "role": f"r{i % ROLES_PER_ORG}",
                    "created_at": now,
                }
                for i in range(USERS)
            ],
        )
        await _insert(
            session,
            Role,
            [
                {"org_id": org_ids[o], "name": f"r{k}", "description": "", "created_at": now, "version": 1}
                for o in range(ORGS)
                for k in range(ROLES_PER_ORG)
            ],
        )
        lines = []
        for o in range(ORGS):
            for k in range(ROLES_PER_ORG):
                lines.append(
                    {
                        "ptype": "p",
                        "v0": f"r{k}",
                        "v1": slug(o),
                        "v2": f"/svc{k}/*",
                        "v3": "*",
                        "v4": "allow",
                        "v5": "",
                        "origin": "api",
                    }
                )
                lines.append(
                    {
                        "ptype": "g",
                        "v0": f"r{k}",
                        "v1": "member",
                        "v2": slug(o),
                        "v3": "",
                        "v4": "",
                        "v5": "",
                        "origin": "api",
                    }
                )
        for uid in user_ids[USERS:]:
            lines.append(
                {
                    "ptype": "g",
                    "v0": f"user:{uid}",
                    "v1": "superadmin",
                    "v2": "*",
                    "v3": "",
                    "v4": "",
                    "v5": "",
                    "origin": "api",
                }
            )
        await _insert(session, PolicyRule, lines)
        await bump_version(session)
        await session.commit()
    await engine.dispose()
    print(f"generated {ORGS} orgs, {USERS} users, {len(lines)} lines in {time.perf_counter() - started:.1f} s")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


async def _lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - started - 0.005)


def _decisions(engine: HotState, cases: list[tuple[str, str, str, str]]) -> list[float]:
    timings = []
    for case in cases:
        started = time.perf_counter_ns()
        engine.decide(*case)
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


async def measure(url: str) -> None:
    db = create_engine(url)
    store = PolicyStore(session_factory(db))
    engine = HotState(ROOT / "model.conf")
    before = current_rss_mib()
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(lags, stop))
    started = time.perf_counter()
    await engine.reload(store.version, store.state, force=True)
    load = time.perf_counter() - started
    stop.set()
    await probe
    await db.dispose()
    gc.collect()
    print(f"policy: {engine.rule_count} lines (memberships included)")
    print(
        f"full load from the database: {load:.2f} s (target <= 5 s); worst event-loop lag {max(lags) * 1000:.1f} ms"
        " (target <= 20 ms)"
    )
    print(f"memory: {current_rss_mib():.0f} MiB RSS after the load ({before:.0f} MiB before; target <= 1024)")

    # Subjects: members of the big org and of small ones, by their position in the generator.
    snapshot = engine._current()  # the benchmark reads the generated ids back from the snapshot
    members = sorted(((key[0], key[1]) for key in snapshot.roles if key[1] != "*"), key=lambda pair: pair[1])
    big = [subject for subject, org in members if org == slug(0)]
    small = [(subject, org) for subject, org in members if org != slug(0)]
    rng = random.Random(7)
    started = time.perf_counter()
    engine.decide(big[0], slug(0), "/svc0/x", "GET")
    first = (time.perf_counter() - started) * 1000
    print(f"first decision in the {len(big):,}-member org: {first:.2f} ms (target <= 50 ms)")

    allows, denies = [], []
    for _ in range(20_000):
        subject, org = rng.choice(small)
        k = snapshot.roles[(subject, org)][0][1:]
        allows.append((subject, org, f"/svc{k}/item/{rng.randint(1, 99)}", "POST"))
        denies.append((subject, org, f"/svc{k}/item/{rng.randint(1, 99)}", "DELETE"))
    _decisions(engine, allows + denies)  # warm: every (subject, org, method) seen once
    for name, cases in (("allow", allows), ("deny", denies)):
        p50, p99 = _percentiles(_decisions(engine, cases))
        print(f"decision ({name}), warm, 10,000 orgs: p50 {p50:.1f} µs, p99 {p99:.1f} µs (target p99 <= 100 µs)")

    few = [case for case in allows if int(case[1][4:]) <= 10][:2000]
    _decisions(engine, few)
    p50_few, _ = _percentiles(_decisions(engine, few * 5))
    p50_all, _ = _percentiles(_decisions(engine, allows))
    print(
        f"p50 over 10 orgs {p50_few:.1f} µs vs over 10,000 orgs {p50_all:.1f} µs: ratio {p50_all / p50_few:.2f}"
        " (target <= 1.5)"
    )

    gc.collect()
    grown = current_rss_mib()
    for i in range(50_000):
        engine.org(f"bogus-{i}")
    gc.collect()
    print(
        f"50,000 unknown org strings: RSS {grown:.0f} -> {current_rss_mib():.0f} MiB (they are refused before "
        "the engine caches anything)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["generate", "measure"])
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    if args.command == "generate":
        upgrade(args.database)  # Alembic runs its own event loop
        asyncio.run(generate(args.database))
    else:
        asyncio.run(measure(args.database))


if __name__ == "__main__":
    main()
