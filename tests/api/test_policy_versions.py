"""Numbered versions of an org's lines through real HTTP: every change is a version, versions compare, a
rollback restores the decisions exactly, and previews (of edits and of rollbacks) change nothing."""

from __future__ import annotations

from typing import Any

from gateway.manage import versions
from gateway.manage.common import Actor, find_org
from gateway.policy.rules import Rule
from gateway.policy.store import add_rules
from tests.api.admin_helpers import World, build_world
from tests.conftest import Gateway, run_cli

BASE = "/admin/orgs/acme"


async def _decisions(world: World, checks: list[dict[str, str]]) -> list[tuple[bool, list[str] | None]]:
    """Each check's answer and its deciding line (from /explain)."""
    answers = []
    for check in checks:
        status, answer, _ = await world.call("admin", "POST", BASE + "/explain", check)
        assert status == 200, answer
        answers.append((answer["allowed"], answer["rule"]))
    return answers


async def _versions(world: World) -> list[tuple[int, str]]:
    status, page, _ = await world.call("admin", "GET", BASE + "/policy-versions")
    assert status == 200, page
    return [(item["number"], item["action"]) for item in page["items"]]


async def _proxied(world: World, who: str, method: str, path: str) -> int:
    token = world.tokens[who]
    status, _, _ = await world.gateway.call(method, path, token=token, headers={"x-org": "acme"})
    return status


def _checks(world: World) -> list[dict[str, str]]:
    return [
        {"subject": world.ids[who], "path": path, "method": method}
        for who in ("viewer", "member")
        for path, method in (("/api/reports/q1", "GET"), ("/api/extra/x", "POST"), ("/api/orders", "GET"))
    ]


async def test_changes_are_versions_and_a_rollback_restores_decisions_exactly(gateway: Gateway) -> None:
    world = await build_world(gateway)
    role = {"name": "reports", "permissions": [{"path": "/api/reports/*", "methods": ["GET"]}]}
    assert (await world.call("admin", "POST", BASE + "/roles", role))[0] == 201
    added = {"lines": ["p, viewer, acme, /api/reports/*, GET, deny", "g, member, reports, acme"]}
    status, stored, _ = await world.call("admin", "POST", BASE + "/policies", added)
    assert status == 201
    assert await _versions(world) == [(3, "policy.add"), (2, "role.create"), (1, "baseline")]
    kept = await _decisions(world, _checks(world))

    # Further changes of every kind: lines added and removed, a role replaced.
    more = {"lines": ["p, viewer, acme, /api/extra/*, POST", "p, member, acme, /api/orders, GET, deny"]}
    assert (await world.call("admin", "POST", BASE + "/policies", more))[0] == 201
    deny_line = next(line["id"] for line in stored if line["line"].endswith("deny"))
    assert (await world.call("admin", "DELETE", f"{BASE}/policies/{deny_line}"))[0] == 204
    replaced = {"permissions": [{"path": "/api/reports/q2", "methods": ["GET"]}]}
    assert (await world.call("admin", "PUT", BASE + "/roles/reports", replaced))[0] == 200
    assert [action for _, action in await _versions(world)][:3] == ["role.update", "policy.remove", "policy.add"]
    assert await _decisions(world, _checks(world)) != kept

    status, diff, _ = await world.call("admin", "GET", BASE + "/policy-versions/6/diff?against=3")
    assert status == 200
    assert "p, viewer, acme, /api/extra/*, POST, allow" in diff["added"]
    assert "p, viewer, acme, /api/reports/*, GET, deny" in diff["removed"]
    status, detail, _ = await world.call("admin", "GET", BASE + "/policy-versions/3")
    assert {"line": "g, member, reports, acme", "origin": "api"} in detail["lines"]

    status, rolled, _ = await world.call("admin", "POST", BASE + "/policy-versions/3/rollback")
    assert status == 200, rolled
    assert (rolled["base"], rolled["number"]) == (6, 7)
    assert await _decisions(world, _checks(world)) == kept, "the same decisions, by the same lines"
    status, again, _ = await world.call("admin", "POST", BASE + "/policy-versions/3/rollback")
    assert (status, again["number"], again["added"], again["removed"]) == (200, 7, [], []), "nothing left to do"
    assert (await world.call("member", "POST", BASE + "/policy-versions/3/rollback"))[0] == 403
    assert (await world.call("outsider", "GET", BASE + "/policy-versions"))[0] == 403
    status, audit, _ = await world.call("admin", "GET", BASE + "/audit?action=policy.rollback")
    assert [event["target"] for event in audit["items"]] == ["3", "3"]


async def test_a_preview_shows_what_would_change_and_changes_nothing(gateway: Gateway) -> None:
    world = await build_world(gateway)
    assert await _proxied(world, "viewer", "GET", "/api/orders") == 200
    assert await _proxied(world, "member", "POST", "/api/orders") == 200
    assert await _proxied(world, "viewer", "POST", "/api/orders") == 403
    status, lines_before, _ = await world.call("admin", "GET", BASE + "/policies")

    change = {"add": ["p, viewer, acme, /api/orders, GET, deny", "p, viewer, acme, /api/orders, POST"]}
    status, preview, _ = await world.call("admin", "POST", BASE + "/policies/preview", change)
    assert status == 200, preview
    assert sorted(preview["added"]) == [
        "p, viewer, acme, /api/orders, GET, deny",
        "p, viewer, acme, /api/orders, POST, allow",
    ]
    assert preview["sampled"] >= 3
    changed = {(c["subject"], c["path"], c["method"]): c for c in preview["changed"]}
    viewer = "user:" + world.ids["viewer"]
    assert changed[(viewer, "/api/orders", "GET")]["allowed_after"] is False
    assert changed[(viewer, "/api/orders", "POST")]["allowed_after"] is True
    assert changed[(viewer, "/api/orders", "GET")]["rule_after"] == [
        "p",
        "viewer",
        "acme",
        "/api/orders",
        "GET",
        "deny",
    ]
    # The member inherits viewer's lines: the deny reaches them too, and the preview says so.
    member = "user:" + world.ids["member"]
    assert (member, "/api/orders", "POST") not in changed

    assert (await world.call("admin", "GET", BASE + "/policies"))[1] == lines_before, "nothing stored"
    assert await _versions(world) == []
    assert await _proxied(world, "viewer", "GET", "/api/orders") == 200, "nothing decided differently"
    bad = {"add": ["p, viewer, globex, /api/x, GET"]}
    assert (await world.call("admin", "POST", BASE + "/policies/preview", bad))[0] == 422, "the same checks"
    assert (await world.call("admin", "POST", BASE + "/policies/preview", {}))[0] == 422

    assert (await world.call("admin", "POST", BASE + "/policies", {"lines": change["add"]}))[0] == 201
    assert await _proxied(world, "viewer", "GET", "/api/orders") == 403
    status, undo, _ = await world.call("admin", "POST", BASE + "/policy-versions/1/preview")
    assert status == 200, undo
    assert sorted(undo["removed"]) == sorted(preview["added"])
    assert any(c["path"] == "/api/orders" and c["allowed_after"] for c in undo["changed"])
    assert await _proxied(world, "viewer", "GET", "/api/orders") == 403, "a preview of a rollback rolls nothing back"
    assert [n for n, _ in await _versions(world)] == [2, 1]


async def test_a_rollback_refuses_what_it_cannot_restore(gateway: Gateway) -> None:
    world = await build_world(gateway)
    role: dict[str, Any] = {"name": "reports", "permissions": [{"path": "/api/reports/*", "methods": ["GET"]}]}
    assert (await world.call("admin", "POST", BASE + "/roles", role))[0] == 201
    assert (await world.call("admin", "DELETE", BASE + "/roles/reports"))[0] == 204
    status, problem, _ = await world.call("admin", "POST", BASE + "/policy-versions/2/rollback")
    assert status == 409 and "reports" in problem["detail"], "its role is gone: recreate it first"

    # A line from the policy files appears (as `policy load` would write it): a rollback cannot remove it.
    async with gateway.runtime.services.sessions() as db:
        org = await find_org(db, "acme")
        async with versions.tracked(db, Actor("cli:test"), [org], "policy.load"):
            await add_rules(db, [Rule("p", ("viewer", "acme", "/api/files/*", "GET", "allow"))], origin="file")
        await db.commit()
    status, problem, _ = await world.call("admin", "POST", BASE + "/policy-versions/1/rollback")
    assert status == 409 and "policy files" in problem["detail"]
    assert (await world.call("admin", "GET", BASE + "/policy-versions/99"))[0] == 404
    assert (await world.call("admin", "GET", BASE + "/policy-versions/0"))[0] in (400, 422)


async def test_policy_sync_writes_a_version(gateway: Gateway, db_url: str, tmp_path: Any) -> None:
    world = await build_world(gateway)
    policy = tmp_path / "acme.csv"
    policy.write_text("p, viewer, acme, /api/synced/*, GET\n")
    result = run_cli(["policy", "sync", str(policy)], db_url)
    assert result.returncode == 0, result.stderr
    assert await _versions(world) == [(2, "policy.sync"), (1, "baseline")]
    status, detail, _ = await world.call("admin", "GET", BASE + "/policy-versions/2")
    assert status == 200
    assert {"line": "p, viewer, acme, /api/synced/*, GET, allow", "origin": "file"} in detail["lines"]


async def test_a_rollback_restores_a_delegated_role(gateway: Gateway) -> None:
    """A custom role's management actions (an auditor reading the audit trail) come back with its version."""
    world = await build_world(gateway)
    auditor = {"name": "auditor", "permissions": [{"path": "admin:/orgs/acme/audit", "methods": ["GET"]}]}
    assert (await world.call("admin", "POST", BASE + "/roles", auditor))[0] == 201
    assert (await world.call("admin", "PATCH", f"{BASE}/members/{world.ids['viewer']}", {"role": "auditor"}))[0] == 200
    assert (await world.call("viewer", "GET", BASE + "/audit"))[0] == 200
    assert (await world.call("admin", "PUT", BASE + "/roles/auditor", {"permissions": []}))[0] == 200
    assert (await world.call("viewer", "GET", BASE + "/audit"))[0] == 403
    status, rolled, _ = await world.call("admin", "POST", BASE + "/policy-versions/2/rollback")
    assert (status, rolled["added"]) == (200, ["p, auditor, acme, admin:/orgs/acme/audit, GET, allow"]), rolled
    assert (await world.call("viewer", "GET", BASE + "/audit"))[0] == 200
