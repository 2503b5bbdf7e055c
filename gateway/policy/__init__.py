"""Sole owner of Casbin: load the model and lines, decide, explain, reload. No casbin type leaks out."""

from gateway.policy.hot import Decision, HotState, KeyRecord, OrgRef, StateRows
from gateway.policy.rules import PolicyError, Rule

__all__ = ["Decision", "HotState", "KeyRecord", "OrgRef", "PolicyError", "Rule", "StateRows"]
