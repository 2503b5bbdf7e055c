"""Shadow policies on the hot path: a candidate policy decides every proxied request a second time, beside the
live policy (which alone decides), and the requests it would decide otherwise are tallied in memory.

The candidate is the live lines with a set of changes applied (`ShadowSpec`), built with every snapshot the live
policy builds, so it follows memberships, orgs and keys as they change. Tallies are counted by (route, org,
both answers, both deciding lines), with one sample request each, and drained to the database in batches by
the runtime (never per request); `/metrics` shows the running totals of this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.policy.rules import Rule

Rule6 = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """The candidate as changes to the live lines (a whole file set is turned into these by the store)."""

    id: int
    name: str
    add: tuple[Rule, ...]
    remove: frozenset[Rule]

    def apply(self, rules: Iterable[Rule]) -> tuple[Rule, ...]:
        """The candidate's lines: the live ones without `remove`, then `add` (each line once)."""
        kept = [rule for rule in rules if rule not in self.remove]
        present = set(kept)
        return (*kept, *(rule for rule in dict.fromkeys(self.add) if rule not in present))


Key = tuple[str, str, bool, bool, Rule6, Rule6]
"""(route, org, live answer, candidate answer, live deciding line, candidate deciding line)."""


@dataclass(slots=True)
class Difference:
    count: int
    subject: str
    path: str
    method: str
    first_seen: float
    last_seen: float


@dataclass(slots=True)
class Tally:
    """What one process saw of one shadow: pending counts (drained by the runtime) and running totals."""

    shadow_id: int
    name: str
    compared: int = 0
    pending_compared: int = 0
    pending: dict[Key, Difference] = field(default_factory=dict)
    totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(route, org, `would_deny` or `would_allow`) → differences seen by this process since it attached."""

    def count(
        self,
        route: str,
        org: str,
        subject: str,
        path: str,
        method: str,
        live: tuple[bool, Rule6],
        other: tuple[bool, Rule6],
    ) -> None:
        self.compared += 1
        self.pending_compared += 1
        if live[0] == other[0]:
            return
        key = (route, org, live[0], other[0], live[1], other[1])
        now = time.time()
        seen = self.pending.get(key)
        if seen is None:
            self.pending[key] = Difference(1, subject, path, method, now, now)
        else:
            seen.count += 1
            seen.last_seen = now
        kind = (route, org, "would_allow" if other[0] else "would_deny")
        self.totals[kind] = self.totals.get(kind, 0) + 1

    def drain(self) -> tuple[int, dict[Key, Difference]]:
        """The counts since the last drain (and forget them)."""
        compared, pending = self.pending_compared, self.pending
        self.pending_compared, self.pending = 0, {}
        return compared, pending
