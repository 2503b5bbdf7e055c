"""The compiled decision path gives exactly casbin's answers (decision and explaining line)."""

from __future__ import annotations

import random
from pathlib import Path

import casbin
import pytest

from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.compiled import key_match2_regex, supports
from gateway.policy.hot import build_enforcer
from gateway.policy.rules import Rule

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "model.conf"
ROLES = ["viewer", "member", "admin", "auditor", "ops"]
ORGS = ["acme", "globex", "initech"]
USERS = [f"user:00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
PATTERNS = ["/*", "*", "/a/*", "/a/:id", "/a/b", "/a/b/", "/b/:x/c", "/a/:id/*", "/c", "/a/*/d", "/:any"]
PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/1", "/a/1/d", "/a/1/2/d", "/b/9/c", "/b/9/c/x", "/c", "/cd", "/x"]
METHODS = ["GET", "POST", "DELETE"]


def _random_policy(rng: random.Random) -> list[Rule]:
    rules: list[Rule] = []
    for _ in range(rng.randint(1, 25)):
        sub = rng.choice(ROLES + USERS[:2])
        dom = rng.choice([*ORGS, "*"])
        act = rng.choice([*METHODS, "*"])
        eft = rng.choice(["allow", "allow", "allow", "deny"])
        rules.append(Rule("p", (sub, dom, rng.choice(PATTERNS), act, eft)))
    for _ in range(rng.randint(0, 12)):
        rules.append(Rule("g", (rng.choice(USERS), rng.choice(ROLES), rng.choice([*ORGS, "*"]))))
    for _ in range(rng.randint(0, 4)):  # role inheritance, cycles included
        rules.append(Rule("g", (rng.choice(ROLES), rng.choice(ROLES), rng.choice([*ORGS, "*"]))))
    return list(dict.fromkeys(rules))


def _plain(rules: list[Rule]) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(str(MODEL))
    enforcer.add_named_domain_matching_func("g", casbin.util.key_match)
    for rule in rules:
        if rule.ptype == "p":
            enforcer.add_policy(*rule.values)
        else:
            enforcer.add_grouping_policy(*rule.values)
    return enforcer


@pytest.mark.parametrize("seed", range(40))
def test_compiled_equals_plain_casbin(seed: int) -> None:
    """For random policies (wildcards, deny lines, inheritance, `*` domains) every decision matches casbin."""
    rng = random.Random(seed)
    for _ in range(5):
        rules = _random_policy(rng)
        engine = HotState(MODEL)
        engine.install(StateRows(rules=tuple(rules), orgs=tuple(OrgRef(o, o) for o in ORGS)))
        plain = _plain(rules)
        for _ in range(60):
            request = (rng.choice(USERS), rng.choice(ORGS), rng.choice(PATHS), rng.choice(METHODS))
            allowed, rule = plain.enforce_ex(*request)
            decision = engine.decide(*request)
            assert (decision.allowed, decision.rule) == (allowed, tuple(rule)), (request, rules)
            assert engine.explain(*request) == decision


def test_keymatch2_regex_is_casbins() -> None:
    """The precompiled regex agrees with casbin's key_match2 on every pattern/path pair."""
    for pattern in PATTERNS:
        regex = key_match2_regex(pattern)
        for path in PATHS:
            assert (regex.match(path) is not None) == casbin.util.key_match2(path, pattern), (pattern, path)


def test_other_models_fall_back_to_casbin(tmp_path: Path) -> None:
    """A model.conf that differs from the shipped one is not compiled, and decisions still work."""
    assert supports(build_enforcer(MODEL, ()).get_model())
    custom = tmp_path / "model.conf"
    custom.write_text(MODEL.read_text().replace("keyMatch2(r.obj, p.obj)", "keyMatch(r.obj, p.obj)"))
    assert not supports(build_enforcer(custom, ()).get_model())
    engine = HotState(custom)
    user = USERS[0]
    engine.install(
        StateRows(
            rules=(Rule("p", ("viewer", "*", "/a*", "GET", "allow")), Rule("g", (user, "viewer", "acme"))),
            orgs=(OrgRef("1", "acme"),),
        )
    )
    assert engine.decide(user, "acme", "/abc", "GET").allowed  # keyMatch semantics: prefix up to '*'


def test_decision_plans_are_evicted_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full plan cache drops the plan used longest ago, not the oldest one inserted: a caller that keeps
    coming back stays warm while one-off callers pass through."""
    from gateway.policy import compiled

    monkeypatch.setattr(compiled, "_CACHE_MAX", 2)
    policy = compiled.CompiledPolicy([["viewer", "acme", "/api/*", "GET", "allow"]], compiled.RoleIndex([]))
    for subject in ("viewer", "user:a", "viewer", "user:b"):
        policy.decide(subject, "acme", "/api/x", "GET")
    assert list(policy._plans) == [("viewer", "acme", "GET"), ("user:b", "acme", "GET")]


def test_a_delta_keeps_the_plans_it_cannot_affect(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a change, the next policy takes over the cached plans but those of the changed subjects and domains;
    eviction keeps the per-subject and per-domain lists exact, and the previous policy keeps an empty cache."""
    from gateway.policy import compiled

    monkeypatch.setattr(compiled, "_CACHE_MAX", 4)
    lines = [["viewer", "acme", "/api/*", "GET", "allow"], ["viewer", "globex", "/api/*", "GET", "allow"]]
    links = [("user:a", "viewer", "acme"), ("user:b", "viewer", "acme"), ("user:a", "viewer", "globex")]
    old = compiled.CompiledPolicy(lines, compiled.RoleIndex(links))
    for subject, org in (("user:x", "acme"), ("user:a", "acme"), ("user:b", "acme"), ("user:a", "globex")):
        old.decide(subject, org, "/api/x", "GET")
    old.decide("user:b", "globex", "/api/x", "GET")  # evicts ("user:x", "acme", "GET")
    assert "user:x" not in old._plans_of_subject
    new = old.advance([(True, ("viewer", "globex", "/other", "GET", "allow"))], {("user:b", "acme"): ()})
    new.adopt(old, subjects={"user:b"}, domains={"globex"}, everything=False)
    assert list(new._plans) == [("user:a", "acme", "GET")]
    assert not old._plans
    assert not new.decide("user:b", "acme", "/api/x", "GET")[0]
    assert new.decide("user:a", "globex", "/other", "GET")[0]


def test_the_path_index_holds_what_it_can_and_tests_the_rest_as_regexes() -> None:
    """Literal, `:param` and a final `/*` go in the trie; a `*` elsewhere, a regex character or a `:` inside a
    segment stay regexes, and both kinds answer."""
    from gateway.policy.compiled import PathIndex, key_match2_regex

    patterns = ["/a/:id", "/a/b", "/a/*", "/x*", "/a/c.d", "/a/b:c", "*", "admin:/orgs/:org"]
    index = PathIndex(enumerate(patterns), lambda pattern: key_match2_regex(pattern).match)
    assert [pattern for _, pattern in sorted((i, patterns[i]) for i, _ in index._fallback)] == [
        "/x*",
        "/a/c.d",
        "/a/b:c",
    ]
    for path in ("/a/b", "/a/7", "/a/", "/a/b/c", "/xx", "/a/cxd", "/a/bzz", "admin:/orgs/acme", "/"):
        found: list[int] = []
        index.collect(path, path.split("/"), found)
        expected = [i for i, pattern in enumerate(patterns) if key_match2_regex(pattern).match(path)]
        assert sorted(found) == expected, path
