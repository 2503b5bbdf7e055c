"""The policy engine gives Casbin's answers for model.conf, with `*` domains, inheritance and deny lines."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import casbin
import pytest

from gateway.policy import HotState, OrgRef, StateRows
from gateway.policy.hot import AllowList, build_enforcer
from gateway.policy.rules import Rule, parse_files, parse_text

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "model.conf"
ALICE = "user:00000000-0000-4000-8000-00000000a11c"
BOB = "user:00000000-0000-4000-8000-000000000b0b"
ROOT_USER = "user:00000000-0000-4000-8000-0000000000f0"

EXTRA = f"""
p, viewer, acme, /api/billing/*, *, deny
p, auditor, acme, /api/reports/:id, GET
g, {ALICE}, admin, acme
g, {BOB}, viewer, acme
g, {BOB}, auditor, acme
g, {ROOT_USER}, superadmin, *
"""


def _engine(extra: str = EXTRA) -> HotState:
    rules = parse_files(sorted((ROOT / "policies").glob("*.csv"))) + parse_text(extra)
    engine = HotState(MODEL)
    engine.install(StateRows(rules=tuple(rules), orgs=(OrgRef("1", "acme"), OrgRef("2", "globex")), version=3))
    return engine


DECISIONS = [
    (ALICE, "acme", "/api/orders/1", "DELETE", True),
    (ALICE, "globex", "/api/orders/1", "GET", False),
    (BOB, "acme", "/api/orders/1", "GET", True),
    (BOB, "acme", "/api/orders/1", "POST", False),
    (BOB, "acme", "/api/billing/1", "GET", False),  # deny overrides the inherited viewer allow
    (ALICE, "acme", "/api/billing/1", "GET", False),  # admin inherits viewer, so the deny reaches it too
    (BOB, "acme", "/api/reports/9", "GET", True),
    (ROOT_USER, "acme", "/anything", "DELETE", True),
    (ROOT_USER, "globex", "/", "PATCH", True),
    ("user:00000000-0000-4000-8000-000000000000", "acme", "/api/orders/1", "GET", False),
]


@pytest.mark.parametrize(("sub", "org", "path", "method", "allowed"), DECISIONS)
def test_decisions_match_plain_casbin(sub: str, org: str, path: str, method: str, allowed: bool) -> None:
    """Every decision equals a plain casbin.Enforcer over the same model and lines."""
    engine = _engine()
    assert engine.decide(sub, org, path, method).allowed is allowed
    plain = casbin.Enforcer(str(MODEL))
    plain.add_named_domain_matching_func("g", casbin.util.key_match)
    for rule in parse_files(sorted((ROOT / "policies").glob("*.csv"))) + parse_text(EXTRA):
        (plain.add_policy if rule.ptype == "p" else plain.add_grouping_policy)(*rule.values)
    assert plain.enforce(sub, org, path, method) is allowed


def test_decision_names_the_deciding_line() -> None:
    """A denial by a deny line carries that line; an allow carries a matching allow line."""
    engine = _engine()
    denied = engine.decide(BOB, "acme", "/api/billing/1", "GET")
    assert denied.rule == ("viewer", "acme", "/api/billing/*", "*", "deny")
    assert "deny" in denied.reason
    nothing = engine.decide(BOB, "globex", "/x", "GET")
    assert nothing.rule == ()
    assert "deny by default" in nothing.reason


def test_roles_and_orgs_come_from_the_snapshot() -> None:
    """roles_of lists direct roles in the org plus roles held everywhere; unknown orgs are None."""
    engine = _engine()
    assert engine.roles_of(BOB, "acme") == ("auditor", "viewer")
    assert engine.roles_of(ROOT_USER, "acme") == ("superadmin",)
    assert engine.org("acme") == OrgRef("1", "acme")
    assert engine.org("nope") is None
    assert engine.version == 3


def test_reload_swaps_only_when_the_version_moved() -> None:
    """reload() skips when the stored version is current, and a failed build keeps the old snapshot."""
    engine = _engine()
    calls: list[str] = []

    async def version() -> int:
        return 3

    async def state() -> StateRows:
        calls.append("state")
        return StateRows(rules=(Rule("p", ("viewer", "*", "/*", "GET", "allow")),), version=4)

    async def broken() -> StateRows:
        raise RuntimeError("database gone")

    async def scenario() -> None:
        assert await engine.reload(version, state) is False
        assert calls == []
        with pytest.raises(RuntimeError):
            await engine.reload(version, broken, force=True)
        assert engine.version == 3
        assert engine.decide(ALICE, "acme", "/api/x", "DELETE").allowed
        assert await engine.reload(version, state, force=True) is True
        assert engine.version == 4

    asyncio.run(scenario())


def test_broken_model_fails_at_construction(tmp_path: Path) -> None:
    """A model file casbin cannot use is refused when the engine is built, not on the first request."""
    bad = tmp_path / "model.conf"
    bad.write_text("[request_definition]\nr = sub, obj\n[policy_effect]\ne = nonsense\n")
    with pytest.raises(Exception):  # noqa: B017, PT011 - casbin raises assorted types for bad models
        HotState(bad)
    assert build_enforcer(MODEL, ()).enforce("u", "d", "/", "GET") is False


def test_an_allow_list_holds_its_networks_and_nothing_else() -> None:
    """Addresses inside one of the networks are in, IPv4 and IPv6; an IPv4 address written as IPv6 counts as
    itself; anything that is not an address is out; remembered answers stay bounded."""
    allowed = AllowList(ipaddress.ip_network(n) for n in ("203.0.113.0/24", "2001:db8::/32", "192.0.2.7/32"))
    inside = ("203.0.113.1", "192.0.2.7", "2001:db8::1", "2001:DB8:ffff::", "::ffff:203.0.113.9")
    outside = ("203.0.114.1", "192.0.2.8", "2001:db9::1", "::ffff:198.51.100.1", "", "unknown", "203.0.113.1:80")
    assert [address in allowed for address in inside] == [True] * len(inside)
    assert [address in allowed for address in outside] == [False] * len(outside)
    for last in range(5000):
        assert f"10.{last // 65536}.{last // 256 % 256}.{last % 256}" not in allowed
    assert len(allowed._answers) <= 1024
    assert "203.0.113.1" in allowed
