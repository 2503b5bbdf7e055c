"""Finding members inside an org: by part of an email or name, by role, and addressing one by email."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from gateway.db.models import PolicyRule
from gateway.policy.rules import Rule
from gateway.policy.store import add_rules
from tests.api.admin_helpers import build_world
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving


async def test_members_are_found_by_email_name_or_role_and_addressed_by_email(gateway: Gateway) -> None:
    world = await build_world(gateway)

    async def emails(query: str, who: str = "admin") -> list[str]:
        status, page, _ = await world.call(who, "GET", "/admin/orgs/acme/members" + query)
        assert status == 200, (query, page)
        return sorted(item["email"] for item in page["items"])

    assert await emails("?search=ADMIN") == ["admin@acme.test"]
    assert await emails("?search=acme.test") == sorted(f"{r}@acme.test" for r in ("owner", "admin", "member", "viewer"))
    assert await emails("?search=globex") == [], "nobody outside the org, even when the text matches them"
    assert await emails("?search=%25") == [], "LIKE wildcards are taken literally"
    assert await emails("?search=_") == []
    assert await emails("?role=viewer") == ["viewer@acme.test"]
    assert await emails("?role=viewer&search=owner") == []
    status, problem, _ = await world.call("admin", "GET", "/admin/orgs/acme/members?search=")
    assert (status, problem["field"]) == (422, "search")

    status, member, _ = await world.call("viewer", "GET", "/admin/orgs/acme/members/Member@ACME.test")
    assert status == 200
    assert member["user_id"] == world.ids["member"]
    assert (await world.call("admin", "GET", "/admin/orgs/acme/members/outsider@globex.test"))[0] == 404
    assert (await world.call("admin", "GET", "/admin/orgs/acme/members/nobody@acme.test"))[0] == 404
    status, changed, _ = await world.call(
        "admin", "PATCH", "/admin/orgs/acme/members/viewer@acme.test", {"role": "member"}
    )
    assert (status, changed["role"]) == (200, "member")
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/members/viewer@acme.test"))[0] == 204
    assert (await world.call("admin", "GET", f"/admin/orgs/acme/members/{world.ids['viewer']}"))[0] == 404


async def test_ownership_transfers_in_one_step(gateway: Gateway) -> None:
    """The owner hands the org to a member: they become owner, the previous owner keeps the chosen role; an
    admin cannot; the org always has an owner."""
    world = await build_world(gateway)
    body = {"to": "member@acme.test", "keep_as": "admin"}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/transfer", body))[0] == 403
    status, moved, _ = await world.call("owner", "POST", "/admin/orgs/acme/transfer", body)
    assert status == 200, moved
    assert (moved["owner"]["user_id"], moved["owner"]["role"]) == (world.ids["member"], "owner")
    assert (moved["previous"]["user_id"], moved["previous"]["role"]) == (world.ids["owner"], "admin")
    page = (await world.call("member", "GET", "/admin/orgs/acme/members?role=owner"))[1]
    assert [item["user_id"] for item in page["items"]] == [world.ids["member"]]
    assert (await world.call("owner", "POST", "/admin/orgs/acme/archive"))[0] == 403, "no longer an owner"
    events = (await world.call("member", "GET", "/admin/orgs/acme/audit?action=org.transfer"))[1]["items"]
    assert [e["target"] for e in events] == [world.ids["member"]]
    # keep_as owner is not a transfer; an unknown member is 404 and changes nothing.
    same = {"to": "admin@acme.test", "keep_as": "owner"}
    assert (await world.call("member", "POST", "/admin/orgs/acme/transfer", same))[0] == 422
    status, _, _ = await world.call("member", "POST", "/admin/orgs/acme/transfer", {"to": "nobody@acme.test"})
    assert status == 404
    page = (await world.call("member", "GET", "/admin/orgs/acme/members?role=owner"))[1]
    assert [item["user_id"] for item in page["items"]] == [world.ids["member"]]


async def test_a_member_named_by_email_is_the_same_admin_object_as_by_id(gateway: Gateway) -> None:
    """A platform line about one member's admin object applies whichever way the member is named."""
    world = await build_world(gateway)
    viewer = world.ids["viewer"]
    rules = [Rule("p", ("admin", "*", f"admin:/orgs/acme/members/{viewer}", "DELETE", "deny"))]
    async with gateway.runtime.services.sessions() as session:
        await add_rules(session, rules)
        await session.commit()
    await gateway.runtime.refresh()
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{viewer}"))[0] == 403
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/members/VIEWER@acme.test"))[0] == 403
    assert (await world.call("admin", "GET", "/admin/orgs/acme/members/viewer@acme.test"))[0] == 200


async def test_member_etags_refuse_a_stale_write(gateway: Gateway) -> None:
    """GET gives an ETag; PATCH and DELETE with If-Match from before someone else's change are 412 and change
    nothing; with the current one they go through."""
    world = await build_world(gateway)
    path = f"/admin/orgs/acme/members/{world.ids['viewer']}"
    status, _, headers = await world.call("admin", "GET", path)
    assert status == 200
    first = headers["etag"]
    assert (await world.call("owner", "PATCH", path, {"role": "member"}))[0] == 200
    stale = {"if-match": first}
    status, problem, _ = await world.call("admin", "PATCH", path, {"role": "admin"}, headers=stale)
    assert (status, problem["type"]) == (412, "urn:gateway:problem:precondition-failed")
    assert (await world.call("admin", "DELETE", path, headers=stale))[0] == 412
    assert (await world.call("admin", "GET", path))[1]["role"] == "member"
    current = (await world.call("admin", "GET", path))[2]["etag"]
    assert current != first
    status, changed, headers = await world.call(
        "admin", "PATCH", path, {"role": "viewer"}, headers={"if-match": current}
    )
    assert (status, changed["role"]) == (200, "viewer")
    assert (await world.call("admin", "DELETE", path, headers={"if-match": headers["etag"]}))[0] == 204


async def test_self_service_orgs_when_switched_on(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """With `[orgs] self_service`, a signed-in person creates orgs and owns them, up to `per_user`; never with an
    API key; a superadmin has no limit. Off (the default, tested in the admin matrix), only superadmins may."""
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), orgs={"self_service": True, "per_user": 2}
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        token = await gateway.login("ann@example.test")
        for slug in ("ann-one", "ann-two"):
            status, _, body = await gateway.call("POST", "/admin/orgs", token=token, json={"slug": slug, "name": slug})
            assert status == 201, body
        status, _, body = await gateway.call("POST", "/admin/orgs", token=token, json={"slug": "ann-3", "name": "x"})
        assert status == 409 and b"orgs" in body
        status, _, body = await gateway.call("GET", "/admin/orgs/ann-one/members", token=token)
        assert status == 200 and b'"role":"owner"' in body
        key = await gateway.key("ann-one", "ann@example.test")
        assert (await gateway.call("POST", "/admin/orgs", headers={"X-API-Key": key}, json={"slug": "k", "name": "k"}))[
            0
        ] == 403
        await gateway.user("root@example.test", superadmin=True)
        root = await gateway.login("root@example.test")
        for n in range(3):
            assert (await gateway.call("POST", "/admin/orgs", token=root, json={"slug": f"r{n}", "name": "r"}))[
                0
            ] == 201


async def test_org_metadata_and_limits_apply_where_they_should(gateway: Gateway) -> None:
    """Description, billing address and limits are set with PATCH (0 removes a limit); the member limit stops
    adds and service accounts, the key limit and the longest key life stop new keys."""
    world = await build_world(gateway)
    change = {
        "description": "Payments team",
        "billing_email": "Billing@Acme.test",
        "max_members": 5,
        "max_key_days": 30,
    }
    status, org, _ = await world.call("admin", "PATCH", "/admin/orgs/acme", change)
    assert status == 200, org
    assert (org["description"], org["billing_email"], org["max_members"], org["max_key_days"]) == (
        "Payments team",
        "billing@acme.test",
        5,
        30,
    )
    assert org["name"] == "Acme", "fields not given stay"
    # Four members already (owner, admin, member, viewer): one more fits, then 409.
    assert (await world.call("admin", "POST", "/admin/orgs/acme/service-accounts", {"name": "ci", "role": "viewer"}))[
        0
    ] == 201
    status, problem, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/service-accounts", {"name": "ci2", "role": "viewer"}
    )
    assert (status, problem["type"]) == (409, "urn:gateway:problem:conflict")
    await gateway.user("new@acme.test")
    assert (
        await world.call("admin", "POST", "/admin/orgs/acme/members", {"email": "new@acme.test", "role": "viewer"})
    )[0] == 409
    # Keys: a lifetime is required and capped at 30 days.
    keys = "/admin/orgs/acme/members/me/keys"
    assert (await world.call("member", "POST", keys, {"name": "k"}))[0] == 422
    assert (await world.call("member", "POST", keys, {"name": "k", "expires_in_days": 31}))[0] == 422
    assert (await world.call("member", "POST", keys, {"name": "k", "expires_in_days": 30}))[0] == 201
    assert (await world.call("admin", "PATCH", "/admin/orgs/acme", {"max_keys": 1, "max_key_days": 0}))[0] == 200
    status, problem, _ = await world.call("member", "POST", keys, {"name": "k2"})
    assert status == 409 and "live API keys" in problem["detail"]
    # Removing the limits lets both through again; nonsense values are 422.
    assert (await world.call("admin", "PATCH", "/admin/orgs/acme", {"max_keys": 0, "max_members": 0}))[0] == 200
    assert (await world.call("member", "POST", keys, {"name": "k2"}))[0] == 201
    assert (await world.call("admin", "PATCH", "/admin/orgs/acme", {"max_keys": -1}))[0] == 422
    assert (await world.call("admin", "PATCH", "/admin/orgs/acme", {"billing_email": "not an address"}))[0] == 422
    assert (await world.call("viewer", "PATCH", "/admin/orgs/acme", {"description": "x"}))[0] == 403


async def test_delegated_admin_roles_stay_inside_their_org_and_below_owners(gateway: Gateway) -> None:
    """A custom role may grant management actions of its own org (an auditor); never another org's, a platform
    object, or an owner's power, whatever the wildcard."""
    world = await build_world(gateway)
    auditor = {
        "name": "auditor",
        "permissions": [
            {"path": "admin:/orgs/acme/audit", "methods": ["GET"]},
            {"path": "admin:/orgs/acme/members/:member", "methods": ["GET"]},
        ],
        "inherits": ["viewer"],
    }
    assert (await world.call("viewer", "GET", "/admin/orgs/acme/audit"))[0] == 403
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", auditor))[0] == 201
    assert (await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{world.ids['viewer']}", {"role": "auditor"}))[
        0
    ] == 200
    assert (await world.call("viewer", "GET", "/admin/orgs/acme/audit"))[0] == 200
    assert (await world.call("viewer", "GET", "/admin/orgs/globex/audit"))[0] == 403, "not another org's"
    assert (await world.call("viewer", "PATCH", f"/admin/orgs/acme/members/{world.ids['member']}", {"role": "viewer"}))[
        0
    ] == 403
    refused = [
        {"path": "admin:/orgs/acme/*", "methods": ["*"]},  # would cover owners, transfer, archive
        {"path": "admin:/orgs/acme/owners", "methods": ["POST"]},
        {"path": "admin:/orgs/:org/transfer", "methods": ["POST"]},
        {"path": "admin:/orgs/globex/members", "methods": ["GET"]},
        {"path": "admin:/orgs", "methods": ["POST"]},
        {"path": "admin:/policies", "methods": ["GET"]},
        {"path": "*", "methods": ["GET"]},
    ]
    for index, permission in enumerate(refused):
        body = {"name": f"bad{index}", "permissions": [permission]}
        status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/roles", body)
        assert (status, problem["field"]) == (422, "permissions[0].path"), permission
    reader = {"name": "reader", "permissions": [{"path": "admin:/orgs/acme/*", "methods": ["GET"]}]}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", reader))[0] == 201, "reading is no owner power"


async def test_an_archived_org_is_deleted_for_good_after_its_grace_period(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """Not before it is archived, not within the grace period; then everything of it goes in one step (members,
    roles, lines, keys, service accounts), audited at platform level, and its slug is free again."""
    await load_system_policy(db_url)
    for grace, expected in ((30, 409), (0, 200)):
        settings = gateway_settings(
            db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), orgs={"delete_after_days": grace}
        )
        async with serving(settings, upstream) as gateway:
            if grace == 30:
                await gateway.org("doomed")
                await gateway.user("dev@doomed.test", org="doomed", role="member")
                await gateway.user("root@platform.test", superadmin=True)
            root = await gateway.login("root@platform.test")
            key = await gateway.key("doomed", "dev@doomed.test") if grace == 30 else None
            if grace == 30:
                role = {"name": "ops", "permissions": [{"path": "/ops/*", "methods": ["GET"]}]}
                assert (await gateway.call("POST", "/admin/orgs/doomed/roles", token=root, json=role))[0] == 201
                assert (await gateway.call("DELETE", "/admin/orgs/doomed", token=root))[0] == 409, "not archived"
                assert (await gateway.call("POST", "/admin/orgs/doomed/archive", token=root))[0] == 200
                assert key is not None
            status, _, body = await gateway.call("DELETE", "/admin/orgs/doomed", token=root)
            assert status == expected, body
    async with serving(gateway_settings(db_url, upstream.url, audit_log="off"), upstream) as gateway:
        root = await gateway.login("root@platform.test")
        assert (await gateway.call("GET", "/admin/orgs/doomed", token=root))[0] == 404
        status, _, body = await gateway.call("GET", "/admin/audit?action=org.delete", token=root)
        event = json.loads(body)["items"][0]
        assert event["target"] == "doomed" and event["org"] is None
        assert event["before"]["members"] == 1 and event["before"]["api_keys"] == 1 and event["before"]["roles"] == 1
        assert event["before"]["policy_lines"] >= 1
        assert (await gateway.call("POST", "/admin/orgs", token=root, json={"slug": "doomed", "name": "again"}))[
            0
        ] == 201
        async with gateway.runtime.services.sessions() as session:
            left = await session.scalar(select(func.count()).select_from(PolicyRule).where(PolicyRule.v1 == "doomed"))
        assert left == 0
