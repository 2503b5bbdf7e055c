"""Differential test (hypothesis): the engine's decisions and explaining lines equal casbin's own `enforce_ex`
on the same lines, for generated policies with wildcards, deny lines, role inheritance (deep chains and cycles
included), `*` domains, superadmins and management objects; and a replica applying random changes as deltas
decides as a fresh full build of the final state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.delta import Change, ChangeRun, LineChange, MemberChange
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


# One role holding many lines (so the engine answers from its path index): overlapping literal, `:param` and `*`
# segments at every depth, deny lines, and patterns the index cannot hold (a regex character, `*` inside, `:`
# inside a segment) that it must test as regexes beside it.
SEGMENTS = ["a", "b", ":id", ":x", "c.d", "e"]
ODD = ["/a/*/c", "/a*", "/a/b:c", "/a/c.d", "/a/(b)", "*", "/*", "/", "/a/", "/a/:id/"]
index_patterns = st.one_of(
    st.builds(
        lambda parts, star, slash: "/" + "/".join(parts) + ("/*" if star else "/" if slash else ""),
        st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4),
        st.booleans(),
        st.booleans(),
    ),
    st.sampled_from(ODD),
)
index_lines = st.lists(
    st.builds(
        lambda obj, act, eft, dom: Rule("p", ("big", dom, obj, act, eft)),
        index_patterns,
        st.sampled_from(["GET", "*"]),
        st.sampled_from(["allow", "allow", "allow", "deny"]),
        st.sampled_from(["acme", "acme", "*"]),
    ),
    min_size=12,
    max_size=60,
)
index_paths = st.builds(
    lambda parts, slash: "/" + "/".join(parts) + ("/" if slash else ""),
    st.lists(st.sampled_from(["a", "b", "c", "7", "c.d", "cxd", "e", "b:c", "(b)", "aaa"]), max_size=5),
    st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=index_lines, extra=st.lists(p_lines, max_size=6), paths=st.lists(index_paths, min_size=10, max_size=30))
def test_a_role_with_many_lines_decides_as_casbin(lines: list[Rule], extra: list[Rule], paths: list[str]) -> None:
    """The path index yields the same decision and deciding line as casbin's scan, whatever overlaps."""
    user = USERS[0]
    rules = list(dict.fromkeys([*lines, *extra, Rule("g", (user, "big", "acme")), Rule("g", (user, "viewer", "*"))]))
    engine = HotState(MODEL)
    engine.install(StateRows(rules=tuple(rules), orgs=tuple(OrgRef(o, o) for o in ORGS)))
    reference = _plain(rules)
    for path in paths:
        for method in ("GET", "POST"):
            allowed, line = reference.enforce_ex(user, "acme", path, method)
            decision = engine.decide(user, "acme", path, method)
            assert (decision.allowed, decision.rule) == (allowed, tuple(line)), (path, method, rules)


# Incremental application: a store (stored lines in id order, memberships, a disabled user, an archived org) and
# a random sequence of changes to it, grouped into runs as replicas read them from the change log.
LIVE = [OrgRef(o, o) for o in ORGS]
ARCHIVED = "gone"
DISABLED = USERS[3]


@dataclass
class Store:
    lines: list[Rule] = field(default_factory=list)
    members: dict[tuple[str, str], str] = field(default_factory=dict)
    version: int = 1

    def rows(self) -> StateRows:
        """What a full read of this store gives (see `gateway.policy.store.read_state`)."""
        stored = [rule for rule in self.lines if rule.values[0] != DISABLED]
        joined = [
            Rule("g", (user, role, org))
            for (user, org), role in self.members.items()
            if user != DISABLED and org != ARCHIVED
        ]
        return StateRows(
            rules=tuple(stored + joined),
            orgs=tuple(LIVE),
            version=self.version,
            disabled=frozenset({DISABLED}),
            memberships_from=len(stored),
        )

    def apply(self, step: tuple[str, Rule | tuple[str, str, str | None]]) -> Change | None:
        """Make the change in the store; the change log's record of it (None when nothing changed)."""
        kind, what = step
        if kind == "member":
            assert isinstance(what, tuple)
            user, org, role = what
            old = self.members.get((user, org))
            if old == role:
                return None
            if role is None:
                del self.members[(user, org)]
            else:
                self.members[(user, org)] = role
            return MemberChange(user, org, old, role)
        assert isinstance(what, Rule)
        if kind == "add":
            if what in self.lines:
                return None
            self.lines.append(what)
            return LineChange(what, added=True)
        if what not in self.lines:
            return None
        self.lines.remove(what)
        return LineChange(what, added=False)


any_line = st.one_of(p_lines, grants, inheritance, st.sampled_from(CHAIN))
steps = st.one_of(
    st.tuples(st.just("add"), any_line),
    st.tuples(st.just("remove"), any_line),
    st.tuples(
        st.just("member"),
        st.tuples(
            st.sampled_from(USERS),
            st.sampled_from([*ORGS, ARCHIVED]),
            st.one_of(st.none(), st.sampled_from(ROLES[:5])),
        ),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=policies,
    joined=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from([*ORGS, ARCHIVED]), st.sampled_from(ROLES))),
    runs=st.lists(st.lists(steps, min_size=1, max_size=6), min_size=1, max_size=8),
    asked=requests,
)
def test_changes_applied_as_deltas_decide_as_a_fresh_build(
    start: tuple[list[Rule], list[Rule], list[Rule], bool],
    joined: list[tuple[str, str, str]],
    runs: list[list[tuple[str, Rule | tuple[str, str, str | None]]]],
    asked: list[tuple[str, str, str, str]],
) -> None:
    """After every run of changes applied as deltas (with decisions made in between, so stale cached plans would
    show), the replica decides, explains and lists roles and lines exactly as a fresh full build of the same
    store, and as casbin does."""
    p, g, inherit, chained = start
    store = Store(lines=list(dict.fromkeys([*p, *g, *inherit, *(CHAIN if chained else [])])))
    store.members = {(user, org): role for user, org, role in joined}
    replica = HotState(MODEL)
    replica.install(store.rows())
    subjects = [*USERS, "viewer", "r1"]
    for run in runs:
        for request in asked[:10]:
            replica.decide(*request)  # warm the cache
        logged = [change for change in map(store.apply, run) if change is not None]
        store.version += 1
        state = store.rows()

        async def version(at: int = store.version) -> int:
            return at

        async def full(rows: StateRows = state) -> StateRows:
            raise AssertionError("rebuilt in full")

        async def log(after: int, at: int = store.version, logged: list[Change] = logged) -> ChangeRun:
            assert after == at - 1
            return ChangeRun(at, tuple(logged))

        assert asyncio.run(replica.reload(version, full, fetch_changes=log))
        fresh = HotState(MODEL)
        fresh.install(state)
        reference = _plain(list(state.rules))
        for request in asked:
            assert replica.decide(*request) == fresh.decide(*request), (request, run)
            allowed, line = reference.enforce_ex(*request)
            assert (replica.decide(*request).allowed, replica.decide(*request).rule) == (allowed, tuple(line))
        for subject in subjects:
            for org in [*ORGS, "*"]:
                assert replica.roles_of(subject, org) == fresh.roles_of(subject, org)
                assert replica.lines_for(subject, org) == fresh.lines_for(subject, org)
        assert replica.rule_count == fresh.rule_count
