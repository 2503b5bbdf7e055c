"""A sample of recent questions to the enforcer, per org: what a policy preview replays against the change."""

from __future__ import annotations

from collections import OrderedDict

PER_ORG = 256
"""Distinct (subject, object, method) kept per org: the newest first-seen ones."""

Question = tuple[str, str, str]


class RecentRequests:
    """The last `per_org` distinct (subject, object, method) decided in each org (proxied and management
    requests alike). Noting one costs a dict lookup; a repeated question changes nothing."""

    def __init__(self, per_org: int = PER_ORG) -> None:
        self._per_org = per_org
        self._orgs: dict[str, OrderedDict[Question, None]] = {}

    def note(self, org: str, subject: str, obj: str, method: str) -> None:
        seen = self._orgs.get(org)
        if seen is None:
            seen = self._orgs[org] = OrderedDict()
        question = (subject, obj, method)
        if question in seen:
            return
        seen[question] = None
        if len(seen) > self._per_org:
            seen.popitem(last=False)

    def sample(self, org: str) -> list[Question]:
        """The org's questions, oldest first (a copy: the data plane keeps noting meanwhile)."""
        return list(self._orgs.get(org, ()))
