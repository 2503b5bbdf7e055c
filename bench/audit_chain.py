"""What chaining the request decision log costs: the audit sink's batch write of realistic lines, plain and
chained (`[audit] chain_decisions`), in one run. The request path only encodes its event in both cases; the
chain's hashing happens in the batch write, which this measures per line.

    python bench/audit_chain.py [--lines 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from gateway.access.audit import AuditEvent, AuditSink


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        method="GET",
        path=f"/api/orders/{n}",
        request_id=f"req-{n:012d}",
        route="/api",
        subject="user:00000000-0000-4000-8000-000000000001",
        org="acme",
        granted=True,
        reason="matched p, viewer, *, /*, GET, allow",
        status=200,
        upstream_status=200,
        duration_ms=1.234,
        upstream_ms=0.9,
        client_ip="203.0.113.7",
    )


def _per_line(chained: bool, events: list[AuditEvent]) -> float:
    sink = AuditSink(os.devnull, chained=chained)
    try:
        started = time.perf_counter()
        for event in events:
            sink.emit(event)
        sink.flush()
        return (time.perf_counter() - started) / len(events) * 1e6
    finally:
        asyncio.run(sink.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    events = [_event(n) for n in range(args.lines)]
    _per_line(True, events[:10_000])  # warm
    plain = min(_per_line(False, events) for _ in range(3))
    chained = min(_per_line(True, events) for _ in range(3))
    print(f"{args.lines} lines, best of 3")
    print(f"plain:   {plain:.2f} us per line (encode + write)")
    print(f"chained: {chained:.2f} us per line (encode + SHA-256 link + write), +{chained - plain:.2f} us")


if __name__ == "__main__":
    main()
