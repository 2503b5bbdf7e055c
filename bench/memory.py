"""Memory per line of the hot snapshot at 300k lines, beside the rule objects themselves.

    python bench/memory.py
    PYTHONPATH=<another checkout> python bench/memory.py     # the same measurement on another commit
    python bench/memory.py --database URL                    # rows as read from bench/scale.py's scenario

The rows are bench/deltas.py's scenario (10,000 orgs, 100,000 members, 300,003 lines: stored lines, then the
memberships' `g` lines), without API keys. Measured twice in one process, `gc.collect()` before every reading:
1. RSS (/proc statm) before and after building the rows, then before and after `HotState.install` of them;
2. the same under tracemalloc, on a fresh copy of the rows (what Python allocated and still holds).
The snapshot's figure is on top of the rows (it keeps the rows' tuple and shares their strings), with an empty
decision cache; the cache's cost per entry is measured after 50,000 decisions (bench/deltas.py's traffic). Only
APIs that predate the change log are used, so the script also runs on commit 28f0053, the last one before it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import random
import tracemalloc
from pathlib import Path

from deltas import ROOT, _traffic, scenario
from scale import current_rss_mib

import gateway
from gateway.db.engine import create_engine, session_factory
from gateway.policy import HotState, StateRows
from gateway.policy.store import PolicyStore


def _rows(database: str | None) -> StateRows:
    if database is None:
        rows, _ = scenario()
    else:
        rows = asyncio.run(_read(database))
    return dataclasses.replace(rows, keys=())


async def _read(url: str) -> StateRows:
    engine = create_engine(url)
    try:
        return await PolicyStore(session_factory(engine)).state()
    finally:
        await engine.dispose()


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="read the rows from here (bench/scale.py generate) instead")
    args = parser.parse_args()
    print(f"gateway from {Path(gateway.__file__).parent}")

    gc.collect()
    empty = current_rss_mib()
    rows = _rows(args.database)
    gc.collect()
    with_rows = current_rss_mib()
    engine = HotState(ROOT / "model.conf")
    gc.collect()
    before = current_rss_mib()
    engine.install(rows)
    gc.collect()
    after = current_rss_mib()
    lines = len(rows.rules)
    rss_rows = (with_rows - empty) * 2**20 / lines
    rss_snapshot = (after - before) * 2**20 / lines
    del engine, rows
    gc.collect()

    tracemalloc.start()
    start = _traced()
    rows = _rows(args.database)
    built = _traced()
    engine = HotState(ROOT / "model.conf")
    ready = _traced()
    engine.install(rows)
    installed = _traced()
    for request in _traffic(random.Random(14), 50_000):
        engine.decide(*request)
    warm = _traced()
    tracemalloc.stop()
    plans = len(engine._current().compiled._plans)  # the decision cache's entries (private: both commits have it)
    assert engine.rule_count == lines

    print(f"{lines:,} lines (100,000 of them memberships) from {args.database or 'bench/deltas.py scenario()'}")
    print(f"{'':30}{'tracemalloc':>14}{'RSS':>14}")
    print(f"{'rows (Rule objects, strings)':30}{(built - start) / lines:>12.0f} B{rss_rows:>12.0f} B   a line")
    print(f"{'hot snapshot on top of them':30}{(installed - ready) / lines:>12.0f} B{rss_snapshot:>12.0f} B   a line")
    print(
        f"snapshot in all: {(installed - ready) / 2**20:.0f} MiB traced, {after - before:.0f} MiB RSS; "
        f"rows {(built - start) / 2**20:.0f} MiB traced"
    )
    print(f"decision cache after 50,000 decisions: {plans:,} plans, {(warm - installed) / plans:.0f} B each (traced)")


if __name__ == "__main__":
    main()
