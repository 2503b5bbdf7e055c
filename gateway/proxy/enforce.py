"""Stage 4, enforce: ask the policy engine; deny by default; a denial carries a decision id for the audit log."""

from __future__ import annotations

import secrets

from gateway.errors import Forbidden
from gateway.policy import Decision, PolicyEngine


def enforce(policy: PolicyEngine, subject: str, org: str, path: str, method: str) -> Decision:
    decision = policy.decide(subject, org, path, method)
    if not decision.allowed:
        raise Denied(decision)
    return decision


class Denied(Forbidden):
    """Casbin said no; `decision_id` links the 403 the client sees to the audit event."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.decision_id = secrets.token_hex(8)
        super().__init__("not allowed in this organization", decision_id=self.decision_id)
