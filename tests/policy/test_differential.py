"""Differential test (hypothesis): the engine's decisions and explaining lines equal casbin's own `enforce_ex`
on the same lines, for generated policies with wildcards, deny lines, role inheritance (deep chains and cycles
included), `*` domains, superadmins and management objects."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.rules import Rule
from tests.policy.test_compiled import _plain

MODEL = Path(__file__).resolve().parents[2] / "model.conf"
ROLES = ["viewer", "member", "admin", "owner", "superadmin", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]
ORGS = ["acme", "globex", "initech"]
USERS = [f"user:00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
PATTERNS = ["/*", "*", "/a/*", "/a/:id", "/a/b", "/a/b/", "/b/:x/c", "/a/:id/*", "/c", "admin:/*", "admin:/orgs/:org"]
PATHS = ["/", "/a", "/a/b", "/a/b/", "/a/1", "/a/1/d", "/b/9/c", "/c", "/cd", "admin:/orgs/acme", "admin:/orgs"]
METHODS = ["GET", "POST", "DELETE"]

domains = st.sampled_from([*ORGS, "*"])
p_lines = st.builds(
    lambda sub, dom, obj, act, eft: Rule("p", (sub, dom, obj, act, eft)),
    st.sampled_from(ROLES + USERS[:2]),
    domains,
    st.sampled_from(PATTERNS),
    st.sampled_from([*METHODS, "*"]),
    st.sampled_from(["allow", "allow", "deny"]),
)
grants = st.builds(lambda u, r, d: Rule("g", (u, r, d)), st.sampled_from(USERS), st.sampled_from(ROLES), domains)
inheritance = st.builds(lambda a, b, d: Rule("g", (a, b, d)), st.sampled_from(ROLES), st.sampled_from(ROLES), domains)
# r1 -> r2 -> ... -> r9 -> superadmin: a chain longer than casbin follows (9 links), sometimes present.
CHAIN = [Rule("g", (f"r{i}", f"r{i + 1}", "*")) for i in range(1, 9)] + [Rule("g", ("r9", "superadmin", "*"))]
policies = st.tuples(
    st.lists(p_lines, min_size=1, max_size=30),
    st.lists(grants, max_size=10),
    st.lists(inheritance, max_size=8),
    st.booleans(),
)
requests = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(ORGS), st.sampled_from(PATHS), st.sampled_from(METHODS)),
    min_size=20,
    max_size=40,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, asked=requests)
def test_engine_decisions_equal_casbin(
    policy: tuple[list[Rule], list[Rule], list[Rule], bool], asked: list[tuple[str, str, str, str]]
) -> None:
    """Every decision and its explaining line are casbin's."""
    p, g, inherit, chained = policy
    rules = list(dict.fromkeys([*p, *g, *inherit, *(CHAIN if chained else [])]))
    engine = HotState(MODEL)
    engine.install(StateRows(rules=tuple(rules), orgs=tuple(OrgRef(o, o) for o in ORGS)))
    reference = _plain(rules)  # casbin as the engine configures it: model.conf + keyMatch domains for g
    for request in asked:
        allowed, line = reference.enforce_ex(*request)
        decision = engine.decide(*request)
        assert (decision.allowed, decision.rule) == (allowed, tuple(line)), (request, rules)
