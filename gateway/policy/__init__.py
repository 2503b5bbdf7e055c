"""Sole owner of Casbin: load the model and lines, decide, explain, reload. No casbin type leaks out."""

from gateway.policy.engine import Decision, KeyRecord, OrgRef, PolicyEngine, PolicyState
from gateway.policy.rules import PolicyError, Rule

__all__ = ["Decision", "KeyRecord", "OrgRef", "PolicyEngine", "PolicyError", "PolicyState", "Rule"]
