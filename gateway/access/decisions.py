"""Asking for a decision (stage 4, and the admin guard): deny by default; a denial carries a decision id."""

from __future__ import annotations

import secrets

from gateway.errors import Forbidden
from gateway.policy import Decision, HotState, KeyRecord


def enforce(
    state: HotState,
    subject: str,
    org: str,
    path: str,
    method: str,
    *,
    key: KeyRecord | None = None,
    route: str | None = None,
) -> Decision:
    """Casbin decides; an API key's scopes can then only narrow the answer, never widen it. A proxied request
    (`route` given) is also decided by the shadow policy when one is attached, which never changes the answer."""
    decision = state.decide(subject, org, path, method)
    state.recent.note(org, subject, path, method)
    if route is not None:
        state.rehearse(route, subject, org, path, method, decision)
    if not decision.allowed:
        raise Denied(decision)
    if key is not None and not key.permits(method, path):
        raise Denied(Decision(False, ()), reason=f"outside the scopes of API key {key.key_id}")
    return decision


class Denied(Forbidden):
    """Casbin said no; `decision_id` links the 403 the client sees to the audit event."""

    def __init__(self, decision: Decision, *, reason: str | None = None) -> None:
        self.decision = decision
        self.reason = reason or decision.reason
        self.decision_id = secrets.token_hex(8)
        super().__init__("not allowed in this organization", decision_id=self.decision_id)
