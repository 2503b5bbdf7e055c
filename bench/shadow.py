"""What a shadow policy costs a proxied request: the data plane's decision call (`access.decisions.enforce`)
without a shadow, and with one attached whose candidate differs from the live policy, in one run.

    python bench/shadow.py [--requests 50000] [--users 2000]

The policy: the shipped system roles plus, per org, a custom role with REST-shaped lines and members holding
the system and custom roles (about 20 lines an org). The candidate adds a deny line to every org's custom role
and takes one allow away, so some requests are tallied as differences. Requests are a fixed random mix of
members, orgs, paths and methods, replayed in the same order against both, warm (after a first pass).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import time
from pathlib import Path

from gateway.access.decisions import Denied, enforce
from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.rules import Rule, parse_files
from gateway.policy.shadow import ShadowSpec

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("viewer", "member", "admin", "reports")


def _policy(orgs: int, users: int, rng: random.Random) -> tuple[list[Rule], list[OrgRef], list[tuple[str, str]]]:
    rules = list(parse_files([ROOT / "policies" / "system.csv"]))
    refs = [OrgRef(id=f"id-{n}", slug=f"org{n}") for n in range(orgs)]
    for ref in refs:
        for i in range(5):
            rules.append(Rule("p", ("reports", ref.slug, f"/api/reports/r{i}/*", "GET", "allow")))
            rules.append(Rule("p", ("reports", ref.slug, f"/api/reports/r{i}/:id/export", "POST", "allow")))
        rules.append(Rule("g", ("reports", "viewer", ref.slug)))
    members = []
    for n in range(users):
        subject, org = f"user:{n:08d}-0000-4000-8000-000000000000", rng.choice(refs).slug
        rules.append(Rule("g", (subject, rng.choice(ROLES), org)))
        members.append((subject, org))
    return rules, refs, members


def _candidate(refs: list[OrgRef]) -> ShadowSpec:
    add = tuple(Rule("p", ("reports", ref.slug, "/api/reports/r0/*", "GET", "deny")) for ref in refs)
    remove = frozenset(Rule("p", ("reports", ref.slug, "/api/reports/r4/*", "GET", "allow")) for ref in refs)
    return ShadowSpec(1, "bench", add, remove)


def _measure(state: HotState, requests: list[tuple[str, str, str, str]]) -> tuple[float, float, float]:
    def run(record: list[float] | None) -> None:
        for subject, org, path, method in requests:
            started = time.perf_counter_ns()
            with contextlib.suppress(Denied):
                enforce(state, subject, org, path, method, route="/api")
            if record is not None:
                record.append((time.perf_counter_ns() - started) / 1000)

    run(None)
    samples: list[float] = []
    gc.disable()
    try:
        run(samples)
    finally:
        gc.enable()
    samples.sort()
    return statistics.fmean(samples), statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--orgs", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    rules, refs, members = _policy(args.orgs, args.users, rng)
    paths = ["/api/orders", "/api/orders/42", "/api/reports/r0/q1", "/api/reports/r4/q2", "/api/reports/r2/9/export"]
    requests = []
    for _ in range(args.requests):
        subject, org = rng.choice(members)
        requests.append((subject, org, rng.choice(paths), rng.choice(("GET", "GET", "GET", "POST", "DELETE"))))

    state = HotState(ROOT / "model.conf")
    state.install(StateRows(rules=tuple(rules), orgs=tuple(refs), version=1))
    plain = _measure(state, requests)
    state.install(StateRows(rules=tuple(rules), orgs=tuple(refs), version=2, shadow=_candidate(refs)))
    shadowed = _measure(state, requests)
    tally = state.tally
    assert tally is not None
    differences = sum(tally.totals.values())

    print(f"{len(rules)} lines, {args.orgs} orgs, {args.users} members; {args.requests} decisions each")
    print(f"{'':18}{'mean us':>9}{'p50 us':>9}{'p99 us':>9}")
    print(f"{'no shadow':18}{plain[0]:9.2f}{plain[1]:9.2f}{plain[2]:9.2f}")
    print(f"{'shadow attached':18}{shadowed[0]:9.2f}{shadowed[1]:9.2f}{shadowed[2]:9.2f}")
    print(f"shadow / plain: mean {shadowed[0] / plain[0]:.2f}x, p99 {shadowed[2] / plain[2]:.2f}x")
    print(f"compared {tally.compared} (two passes), differences {differences}; no I/O on the decision path")


if __name__ == "__main__":
    main()
