"""Dry runs of policy changes: make the change inside a savepoint, build the policy it would give, replay the
org's recent questions against both, and roll the change back. Nothing is stored, audited or reloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Organization
from gateway.manage import versions
from gateway.policy import Decision, HotState, StateRows
from gateway.policy.recent import Question
from gateway.policy.store import read_state


@dataclass(frozen=True, slots=True)
class ChangedDecision:
    """A request whose answer (allowed or not) the change would turn; a new deciding line alone is not one."""

    subject: str
    path: str
    method: str
    allowed_now: bool
    allowed_after: bool
    rule_now: list[str]
    """The deciding line now (empty: no line matched, denied by default)."""
    rule_after: list[str]


@dataclass(frozen=True, slots=True)
class Preview:
    added: list[str]
    removed: list[str]
    sampled: int
    """Recent distinct requests of the org replayed against the change (the newest, up to 256 per process)."""
    changed: list[ChangedDecision]


class _Undo(Exception):
    """Raised inside the savepoint to roll the previewed change back."""


def _line(decision: Decision) -> list[str]:
    return ["p", *decision.rule] if decision.rule else []


def _replay(hot: HotState, candidate: HotState, org: str, sample: list[Question]) -> list[ChangedDecision]:
    changed = []
    for subject, path, method in sample:
        now = hot.decide(subject, org, path, method, remember=False)
        then = candidate.decide(subject, org, path, method, remember=False)
        if now.allowed != then.allowed:
            changed.append(ChangedDecision(subject, path, method, now.allowed, then.allowed, _line(now), _line(then)))
    return changed


async def preview(
    session: AsyncSession, hot: HotState, org: Organization, change: Callable[[], Awaitable[object]]
) -> Preview:
    """What `change` (a coroutine making the change in `session`) would do to `org`'s lines and decisions."""
    before = await versions.current(session, org.slug)
    seen: list[tuple[list[versions.Line], StateRows]] = []
    try:
        async with session.begin_nested():
            await change()
            await session.flush()
            seen.append((await versions.current(session, org.slug), await read_state(session)))
            raise _Undo
    except _Undo:
        pass
    # Built after the savepoint is rolled back: the change's locks (the org's, the audit chain's head) are not
    # held while a whole policy is compiled.
    after, state = seen[0]
    candidate = await asyncio.to_thread(hot.trial, state)
    sample = hot.recent.sample(org.slug)
    added, removed = versions.compare(before, after)
    return Preview(added, removed, len(sample), _replay(hot, candidate, org.slug, sample))
