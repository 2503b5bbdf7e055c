"""Questions of the live policy in one org: checks in batches, who can do something, what a subject can do."""

from __future__ import annotations

import json

from tests.api.admin_helpers import build_world
from tests.conftest import Gateway, run_cli


async def test_batch_check_who_can_and_what_a_subject_can_do(gateway: Gateway) -> None:
    world = await build_world(gateway)
    admin = "admin"
    # A custom role that may read billing, and one member holding it; a deny line for viewers on billing.
    body = {"name": "billing", "permissions": [{"path": "/api/billing/*", "methods": ["GET"]}]}
    assert (await world.call(admin, "POST", "/admin/orgs/acme/roles", body))[0] == 201
    assert (await world.call(admin, "PATCH", f"/admin/orgs/acme/members/{world.ids['member']}", {"role": "billing"}))[
        0
    ] == 200
    lines = {"lines": ["p, viewer, acme, /api/billing/secret, GET, deny"]}
    assert (await world.call(admin, "POST", "/admin/orgs/acme/policies", lines))[0] == 201

    checks = [
        {"subject": world.ids["member"], "path": "/api/billing/x", "method": "GET"},
        {"subject": "viewer@acme.test", "path": "/api/billing/secret", "method": "GET"},
        {"subject": "viewer", "path": "/api/orders", "method": "GET"},
        {"subject": "admin", "path": "/api/orders", "method": "DELETE"},
    ]
    status, answer, _ = await world.call(admin, "POST", "/admin/orgs/acme/check/batch", {"checks": checks})
    assert status == 200
    results = answer["results"]
    assert [r["allowed"] for r in results] == [True, False, True, True]
    assert results[1]["subject"] == f"user:{world.ids['viewer']}"

    # One bad entry fails the whole call and is named; an address outside the org is 404 like any unknown.
    bad = [*checks[:2], {"subject": "outsider@globex.test", "path": "/api/x", "method": "GET"}]
    status, answer, _ = await world.call(admin, "POST", "/admin/orgs/acme/check/batch", {"checks": bad})
    assert status == 404
    assert answer["detail"].startswith("checks[2].subject:")
    status, answer, _ = await world.call(admin, "POST", "/admin/orgs/acme/check/batch", {"checks": []})
    assert status == 422
    too_many = {"checks": [checks[0]] * 101}
    assert (await world.call(admin, "POST", "/admin/orgs/acme/check/batch", too_many))[0] == 422

    query = {"path": "/api/billing/secret", "method": "GET"}
    status, answer, _ = await world.call(admin, "POST", "/admin/orgs/acme/who-can", query)
    assert status == 200
    who = answer
    allowed = {entry["email"]: entry for entry in who["members"]}
    # The viewer is denied by the deny line; the member holds `billing` (not viewer), admin and owner inherit
    # viewer's lines through member, so the deny reaches them too.
    assert "viewer@acme.test" not in allowed
    assert allowed["member@acme.test"]["rule"] == ["p", "billing", "acme", "/api/billing/*", "GET", "allow"]
    assert allowed["member@acme.test"]["role"] == "billing"
    assert "outsider@globex.test" not in allowed, "only this org's members"
    assert {entry["role"] for entry in who["roles"]} == {"billing"}
    for entry in who["members"]:
        check = {"subject": entry["subject"], **query}
        assert (await world.call(admin, "POST", "/admin/orgs/acme/check", check))[1]["allowed"]

    status, answer, _ = await world.call(admin, "GET", "/admin/orgs/acme/subjects/viewer@acme.test/lines")
    assert status == 200
    viewer = answer
    assert viewer["subject"] == f"user:{world.ids['viewer']}"
    assert viewer["roles"] == ["viewer"]
    assert ["p", "viewer", "acme", "/api/billing/secret", "GET", "deny"] in viewer["lines"]
    assert all(line[2] in ("acme", "*") for line in viewer["lines"])
    status, answer, _ = await world.call(admin, "GET", "/admin/orgs/acme/subjects/billing/lines")
    assert answer["lines"] == [["p", "billing", "acme", "/api/billing/*", "GET", "allow"]]
    assert (await world.call(admin, "GET", "/admin/orgs/acme/subjects/outsider@globex.test/lines"))[0] == 404
    assert (await world.call("viewer", "GET", "/admin/orgs/acme/subjects/viewer/lines"))[0] == 403


async def test_the_audit_trail_exports_as_ndjson_through_the_api_and_the_cli(gateway: Gateway) -> None:
    """Oldest first, one object a line, the same fields as the list; filters apply; the CLI prints the same."""
    world = await build_world(gateway)
    for role in ("member", "viewer"):
        body = {"role": role}
        assert (await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{world.ids['viewer']}", body))[0] == 200
    status, events, headers = await world.call("admin", "GET", "/admin/orgs/acme/audit/export?action=member.role")
    assert status == 200
    assert headers["content-type"].startswith("application/x-ndjson")
    assert [(e["action"], e["after"]) for e in events] == [
        ("member.role", {"role": "member"}),
        ("member.role", {"role": "viewer"}),
    ]
    assert events[0]["id"] < events[1]["id"]
    listed = (await world.call("admin", "GET", "/admin/orgs/acme/audit?action=member.role"))[1]["items"]
    assert [e["id"] for e in reversed(listed)] == [e["id"] for e in events], "the list's events, oldest first"
    assert (await world.call("outsider", "GET", "/admin/orgs/acme/audit/export"))[0] == 403
    everything = (await world.call("superadmin", "GET", "/admin/audit/export"))[1]
    assert {e["id"] for e in events} <= {e["id"] for e in everything}

    printed = run_cli(
        ["audit", "export", "--org", "acme", "--action", "member.role"], gateway.runtime.settings.database_url
    )
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line)["id"] for line in printed.stdout.splitlines()] == [e["id"] for e in events]
    assert "2 events exported" in printed.stderr
