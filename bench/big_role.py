"""One role holding many path patterns: decision latency with the path index, against the same engine scanning
one regex per line (the way it decided before the index), in one run.

    python bench/big_role.py [--requests 20000]

For 100, 1,000 and 10,000 patterns in one role (REST-shaped: `/api/v1/r<i>`, `/api/v1/r<i>/:id`,
`/api/v1/r<i>/:id/<sub>`, `/api/v1/r<i>/*`, a deny line in every 50), requests for paths the role has and paths
it does not, decided through `HotState.decide`, the data plane's call. Target (issue 14): p99 <= 20 us at 10,000.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from pathlib import Path

import gateway.policy.compiled as compiled
from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.rules import Rule

MODEL = Path(__file__).resolve().parents[1] / "model.conf"
USER = "user:00000000-0000-4000-8000-000000000001"


def _rules(patterns: int) -> list[Rule]:
    rules = [Rule("g", (USER, "api", "acme"))]
    shapes = ["/api/v1/r{i}", "/api/v1/r{i}/:id", "/api/v1/r{i}/:id/items", "/api/v1/r{i}/*"]
    for n in range(patterns):
        i, shape = divmod(n, len(shapes))
        effect = "deny" if n % 50 == 49 else "allow"
        rules.append(Rule("p", ("api", "acme", shapes[shape].format(i=i), "GET" if n % 3 else "*", effect)))
    return rules


def _requests(patterns: int, count: int, rng: random.Random) -> list[str]:
    top = max(1, patterns // 4)
    out = []
    for _ in range(count):
        i = rng.randrange(top * 2)  # half of them for resources the role does not have
        out.append(rng.choice([f"/api/v1/r{i}", f"/api/v1/r{i}/{rng.randrange(999)}", f"/api/v1/r{i}/7/items"]))
    return out


def _measure(engine: HotState, paths: list[str]) -> tuple[float, float]:
    for path in paths[:500]:
        engine.decide(USER, "acme", path, "GET")
    samples = []
    gc.disable()
    try:
        for path in paths:
            started = time.perf_counter_ns()
            engine.decide(USER, "acme", path, "GET")
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(7)
    print(f"{'patterns':>9} {'index p50 us':>13} {'p99 us':>8} {'scan p50 us':>12} {'p99 us':>8}")
    shipped = compiled.INDEX_MIN_LINES
    for patterns in (100, 1_000, 10_000):
        rows = StateRows(rules=tuple(_rules(patterns)), orgs=(OrgRef("acme", "acme"),))
        paths = _requests(patterns, args.requests, rng)
        figures = []
        for threshold in (shipped, 10**9):  # the index, then one regex per line
            compiled.INDEX_MIN_LINES = threshold
            engine = HotState(MODEL)
            engine.install(rows)
            figures.extend(_measure(engine, paths))
        compiled.INDEX_MIN_LINES = shipped
        print(f"{patterns:>9,} {figures[0]:>13.1f} {figures[1]:>8.1f} {figures[2]:>12.1f} {figures[3]:>8.1f}")
    print("target: p99 <= 20 us at 10,000 patterns (index)")


if __name__ == "__main__":
    main()
