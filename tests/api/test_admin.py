"""/admin behaviour: org lifecycle, members and owners, custom roles, policy lines, decisions, keys, service
accounts, audit, pagination, concurrency and cross-org isolation — all through real HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import jwt
import pytest

from tests.api.admin_helpers import World, build_world
from tests.conftest import PASSWORD, Gateway


@pytest.fixture
async def world(gateway: Gateway) -> World:
    return await build_world(gateway)


async def _proxied(world: World, who: str, method: str, path: str = "/api/x", org: str = "acme") -> int:
    status, _, _ = await world.gateway.call(method, path, token=world.tokens[who], org=org)
    return status


# -- organizations ---------------------------------------------------------------------------------------


async def test_org_create_makes_the_creator_owner_and_validates(world: World) -> None:
    """A superadmin creates an org and owns it; bad slugs are 422 naming `slug`; a duplicate is 409."""
    status, org, headers = await world.call("superadmin", "POST", "/admin/orgs", {"slug": "initech", "name": "Initech"})
    assert status == 201, org
    assert org["slug"] == "initech" and org["archived"] is False
    assert headers["ETag"] == f'"{org["version"]}"'
    status, page, _ = await world.call("superadmin", "GET", "/admin/orgs/initech/members")
    assert [(m["user_id"], m["role"]) for m in page["items"]] == [(world.ids["superadmin"], "owner")]
    for slug in ("Bad", "-x", "a_b", "*", "x" * 64, ""):
        status, problem, _ = await world.call("superadmin", "POST", "/admin/orgs", {"slug": slug, "name": "X"})
        assert status == 422 and problem["field"] == "slug", (slug, problem)
    status, problem, _ = await world.call("superadmin", "POST", "/admin/orgs", {"slug": "initech", "name": "Again"})
    assert status == 409
    status, problem, _ = await world.call("superadmin", "POST", "/admin/orgs", {"slug": "ok", "name": 5})
    assert status == 422 and problem["field"] == "name"


async def test_listing_orgs_shows_mine_or_everything(world: World) -> None:
    """A member lists their own orgs; a superadmin lists every org, archived ones included."""
    _, mine, _ = await world.call("viewer", "GET", "/admin/orgs")
    assert [org["slug"] for org in mine["items"]] == ["acme"]
    await world.call("outsider", "POST", "/admin/orgs/globex/archive")
    _, theirs, _ = await world.call("outsider", "GET", "/admin/orgs")
    assert theirs["items"] == []
    _, everything, _ = await world.call("superadmin", "GET", "/admin/orgs")
    assert [(org["slug"], org["archived"]) for org in everything["items"]] == [("acme", False), ("globex", True)]


async def test_rename_with_if_match_refuses_a_stale_version(world: World) -> None:
    """Two concurrent renames from the same read: one wins, the other gets 412; nothing is lost silently."""
    _, org, headers = await world.call("admin", "GET", "/admin/orgs/acme")
    etag = headers["ETag"]
    answers = await asyncio.gather(
        *(
            world.call("admin", "PATCH", "/admin/orgs/acme", {"name": f"Acme {n}"}, headers={"If-Match": etag})
            for n in range(2)
        )
    )
    assert sorted(status for status, _, _ in answers) == [200, 412]
    status, problem, _ = await world.call("admin", "PATCH", "/admin/orgs/acme", {"name": "X"}, {"If-Match": "junk"})
    assert status == 400
    assert "If-Match" in problem["detail"]
    status, renamed, _ = await world.call("admin", "PATCH", "/admin/orgs/acme", {"name": "Acme Corp"})
    assert status == 200 and renamed["version"] == org["version"] + 2 and renamed["slug"] == "acme"


async def test_archive_denies_members_and_keys_at_once_and_restore_brings_them_back(world: World) -> None:
    """Archiving cuts off proxied requests, API keys and the admin API for every member at once."""
    key = await world.gateway.key("acme", "member@acme.test")
    assert await _proxied(world, "member", "GET") == 200
    status, archived, _ = await world.call("owner", "POST", "/admin/orgs/acme/archive")
    assert status == 200 and archived["archived"] is True
    assert await _proxied(world, "member", "GET") == 403
    assert await _proxied(world, "owner", "GET") == 403
    # The archived org's keys leave the live-key snapshot: rejected as a credential (401), like a revoked key.
    status, headers, body = await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key})
    assert status == 401, body
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert (await world.call("owner", "GET", "/admin/orgs/acme/members"))[0] == 403
    assert (await world.call("owner", "POST", "/admin/orgs/acme/restore"))[0] == 403
    status, restored, _ = await world.call("superadmin", "POST", "/admin/orgs/acme/restore")
    assert status == 200 and restored["archived"] is False
    assert await _proxied(world, "member", "GET") == 200
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 200


# -- members and owners ----------------------------------------------------------------------------------


async def test_role_changes_apply_on_the_next_request(world: World) -> None:
    """An admin adds a user and changes their role; the next proxied request follows each change."""
    new_id = await world.gateway.user("new@acme.test")
    token = await world.gateway.login("new@acme.test")
    status, member, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/members", {"email": "NEW@acme.test", "role": "viewer"}
    )
    assert status == 201, member
    assert member["user_id"] == new_id and member["role"] == "viewer"
    assert (await world.gateway.call("POST", "/api/x", token=token, org="acme"))[0] == 403
    status, _, _ = await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{new_id}", {"role": "member"})
    assert status == 200
    assert (await world.gateway.call("POST", "/api/x", token=token, org="acme"))[0] == 200
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{new_id}"))[0] == 204
    assert (await world.gateway.call("GET", "/api/x", token=token, org="acme"))[0] == 403
    status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/members", {"role": "viewer"})
    assert status == 422 and problem["field"] == "user_id"
    status, problem, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/members", {"email": "member@acme.test", "role": "viewer"}
    )
    assert status == 409
    status, problem, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/members", {"email": "nobody@acme.test", "role": "viewer"}
    )
    assert status == 404
    status, problem, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/members", {"email": "outsider@globex.test", "role": "wizard"}
    )
    assert status == 422 and problem["field"] == "role"


async def test_nobody_raises_themselves_and_only_owners_make_owners(world: World) -> None:
    """A member cannot change their own role; an admin cannot grant or take away owner; an owner can."""
    member, admin, owner = world.ids["member"], world.ids["admin"], world.ids["owner"]
    assert (await world.call("member", "PATCH", f"/admin/orgs/acme/members/{member}", {"role": "admin"}))[0] == 403
    assert (await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{admin}", {"role": "owner"}))[0] == 403
    assert (await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{owner}", {"role": "viewer"}))[0] == 403
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{owner}"))[0] == 403
    _, page, _ = await world.call("admin", "GET", "/admin/orgs/acme/members")
    assert {m["user_id"]: m["role"] for m in page["items"]}[owner] == "owner"
    assert (await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{admin}", {"role": "owner"}))[0] == 200


async def test_the_last_owner_stays(world: World) -> None:
    """The last owner cannot be demoted or removed (409); with a second owner, one of them can go."""
    owner = world.ids["owner"]
    status, problem, _ = await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{owner}", {"role": "admin"})
    assert status == 409 and "last owner" in problem["detail"]
    assert (await world.call("owner", "DELETE", f"/admin/orgs/acme/members/{owner}"))[0] == 409
    assert (await world.call("superadmin", "DELETE", f"/admin/orgs/acme/members/{owner}"))[0] == 409


async def test_concurrent_demotions_keep_one_owner(world: World) -> None:
    """Two owners demote each other at the same moment: exactly one succeeds, the org keeps an owner."""
    admin = world.ids["admin"]
    assert (await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{admin}", {"role": "owner"}))[0] == 200
    world.tokens["admin"] = await world.gateway.login("admin@acme.test")
    answers = await asyncio.gather(
        world.call("owner", "PATCH", f"/admin/orgs/acme/members/{admin}", {"role": "viewer"}),
        world.call("admin", "PATCH", f"/admin/orgs/acme/members/{world.ids['owner']}", {"role": "viewer"}),
    )
    # Exactly one wins. The loser has two legitimate answers, depending on whether the winner's change is already
    # in the policy snapshot when the loser's authorization runs (403: no longer an owner) or not yet (409: the
    # org's row lock made it wait, and its change would now remove the last owner).
    assert sorted(status for status, _, _ in answers) in ([200, 403], [200, 409]), answers
    (loser,) = [answer for status, answer, _ in answers if status != 200]
    assert loser["type"] in ("urn:gateway:problem:forbidden", "urn:gateway:problem:conflict"), loser
    if loser["status"] == 403:
        assert loser["detail"].startswith("only owners may change"), loser
    else:
        assert "last owner" in loser["detail"], loser
    _, page, _ = await world.call("superadmin", "GET", "/admin/orgs/acme/members")
    assert [m["role"] for m in page["items"]].count("owner") == 1


async def test_removing_a_member_revokes_their_keys_for_good(world: World) -> None:
    """A removed member's keys stop at once and do not come back when the member is re-added."""
    key = await world.gateway.key("acme", "member@acme.test")
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 200
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{world.ids['member']}"))[0] == 204
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401
    body = {"user_id": world.ids["member"], "role": "member"}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/members", body))[0] == 201
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401


# -- custom roles ----------------------------------------------------------------------------------------


async def test_custom_roles_grant_deny_and_inherit(world: World) -> None:
    """A custom role's permissions and parents decide proxied requests; deny overrides what it inherits."""
    role = {
        "name": "billing",
        "description": "invoices",
        "permissions": [
            {"path": "/api/invoices/*", "methods": ["GET", "POST"]},
            {"path": "/api/x", "methods": ["GET"], "effect": "deny"},
        ],
        "inherits": ["viewer"],
    }
    status, created, headers = await world.call("admin", "POST", "/admin/orgs/acme/roles", role)
    assert status == 201, created
    assert created["inherits"] == ["viewer"] and headers["ETag"] == '"1"'
    new_id = await world.gateway.user("billing@acme.test")
    token = await world.gateway.login("billing@acme.test")
    body = {"user_id": new_id, "role": "billing"}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/members", body))[0] == 201
    call = world.gateway.call
    assert (await call("POST", "/api/invoices/7", token=token, org="acme"))[0] == 200
    assert (await call("GET", "/api/orders", token=token, org="acme"))[0] == 200  # inherited from viewer
    assert (await call("GET", "/api/x", token=token, org="acme"))[0] == 403  # its own deny
    assert (await call("DELETE", "/api/invoices/7", token=token, org="acme"))[0] == 403
    assert (await call("GET", "/api/invoices/7", token=token, org="globex"))[0] == 403
    # Replace with If-Match: the stale ETag loses.
    replaced = {"permissions": [{"path": "/api/invoices/*", "methods": ["*"]}], "inherits": []}
    status, _, _ = await world.call("admin", "PUT", "/admin/orgs/acme/roles/billing", replaced, {"If-Match": '"1"'})
    assert status == 200
    status, _, _ = await world.call("admin", "PUT", "/admin/orgs/acme/roles/billing", replaced, {"If-Match": '"1"'})
    assert status == 412
    assert (await call("DELETE", "/api/invoices/7", token=token, org="acme"))[0] == 200
    assert (await call("GET", "/api/orders", token=token, org="acme"))[0] == 403


async def test_role_validation_and_escalation_guards(world: World) -> None:
    """System names, bad paths, owner powers and other orgs' management objects, unknown parents and cycles are
    422; inheriting owner is for owners only."""
    base = {"name": "ops", "permissions": [], "inherits": []}
    cases = [
        ({**base, "name": "admin"}, "name"),
        ({**base, "name": "Ops!"}, "name"),
        ({**base, "permissions": [{"path": "/a.b", "methods": ["GET"]}]}, "permissions[0]"),
        ({**base, "permissions": [{"path": "admin:/orgs/acme/owners", "methods": ["POST"]}]}, "permissions[0].path"),
        ({**base, "permissions": [{"path": "admin:/orgs/globex/members", "methods": ["GET"]}]}, "permissions[0].path"),
        ({**base, "permissions": [{"path": "/x", "methods": ["BREW"]}]}, "permissions[0]"),
        ({**base, "permissions": [{"path": "/x", "methods": []}]}, "permissions[0].methods"),
        ({**base, "inherits": ["ghost"]}, "inherits[0]"),
        ({**base, "inherits": ["superadmin"]}, "inherits[0]"),
        ({**base, "inherits": ["ops"]}, "inherits[0]"),
    ]
    for body, field in cases:
        status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/roles", body)
        assert status == 422 and problem["field"] == field, (body, problem)
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", {**base, "inherits": ["owner"]}))[0] == 403
    assert (await world.call("owner", "POST", "/admin/orgs/acme/roles", {**base, "inherits": ["owner"]}))[0] == 201
    # ops inherits owner: an admin may neither assign it nor build a role on it.
    body = {"email": "outsider@globex.test", "role": "ops"}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/members", body))[0] == 403
    ops2 = {"name": "ops2", "inherits": ["ops"]}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", ops2))[0] == 403
    a = {"name": "a", "inherits": ["viewer"]}
    b = {"name": "b", "inherits": ["a"]}
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", a))[0] == 201
    assert (await world.call("admin", "POST", "/admin/orgs/acme/roles", b))[0] == 201
    status, problem, _ = await world.call("admin", "PUT", "/admin/orgs/acme/roles/a", {"inherits": ["b"]})
    assert status == 422 and "cycle" in problem["detail"]


async def test_deleting_a_role_in_use_needs_somewhere_to_move_its_members(world: World) -> None:
    """409 while held or inherited; `move_to` moves the holders, then the role and its lines are gone."""
    await world.call("admin", "POST", "/admin/orgs/acme/roles", {"name": "temp", "inherits": ["member"]})
    await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{world.ids['viewer']}", {"role": "temp"})
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/roles/temp"))[0] == 409
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/roles/viewer"))[0] == 409
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/roles/temp?move_to=ghost"))[0] == 422
    assert (await world.call("admin", "DELETE", "/admin/orgs/acme/roles/temp?move_to=viewer"))[0] == 204
    _, viewer, _ = await world.call("admin", "GET", f"/admin/orgs/acme/members/{world.ids['viewer']}")
    assert viewer["role"] == "viewer"
    assert (await world.call("admin", "GET", "/admin/orgs/acme/roles/temp"))[0] == 404
    _, lines, _ = await world.call("admin", "GET", "/admin/orgs/acme/policies")
    assert not any("temp" in line["line"] for line in lines["items"])


# -- policy lines and decisions --------------------------------------------------------------------------


async def test_org_policy_lines_are_validated_naming_the_field(world: World) -> None:
    """Lines that would poison or surprise the enforcer are refused with 422 and the field; good ones apply."""
    bad = [
        ("p, viewer, *, /x, GET", "lines[0]"),
        ("p, viewer, globex, /x, GET", "lines[0]"),
        (["p", "viewer", "acme", "/x ", "GET"], "lines[0]"),
        (["p", "viewer", "acme", "/x,y", "GET"], "lines[0]"),
        ("p, viewer, acme, /x.y, GET", "lines[0]"),
        ("p, viewer, acme, admin:/orgs/acme/members, POST", "lines[0]"),
        ("p, ghost, acme, /x, GET", "lines[0]"),
        (f"p, user:{uuid.uuid4()}, acme, /x, GET", "lines[0]"),
        (f"g, user:{world.ids['viewer']}, admin, acme", "lines[0]"),
        ("g, viewer, superadmin, acme", "lines[0]"),
        ("p, viewer, acme, /x, GET # note", "lines[0]"),
        ("", "lines[0]"),
    ]
    for line, field in bad:
        status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/policies", {"lines": [line]})
        assert status == 422 and problem["field"] == field, (line, problem)
    status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/policies", {"lines": "p"})
    assert status == 422 and problem["field"] == "lines"
    assert (await _proxied(world, "viewer", "GET", "/api/secret")) == 200
    good = {"lines": ["p, viewer, acme, /api/secret, GET, deny", ["p", "member", "acme", "/api/extra", "DELETE"]]}
    status, stored, _ = await world.call("admin", "POST", "/admin/orgs/acme/policies", good)
    assert status == 201, stored
    assert [line["origin"] for line in stored] == ["api", "api"]
    assert (await _proxied(world, "viewer", "GET", "/api/secret")) == 403
    assert (await _proxied(world, "member", "DELETE", "/api/extra")) == 200
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/policies/{stored[0]['id']}"))[0] == 204
    assert (await _proxied(world, "viewer", "GET", "/api/secret")) == 200


async def test_file_lines_and_other_orgs_lines_cannot_be_removed_here(world: World) -> None:
    """A line from the policy files is 409 (edit the files); another org's line id is 404 and stays."""
    _, everything, _ = await world.call("superadmin", "GET", "/admin/policies?limit=200")
    file_line = next(line for line in everything["items"] if line["origin"] == "file")
    assert (await world.call("superadmin", "DELETE", f"/admin/policies/{file_line['id']}"))[0] == 409
    _, stored, _ = await world.call(
        "outsider", "POST", "/admin/orgs/globex/policies", {"lines": ["p, viewer, globex, /g, GET"]}
    )
    line_id = stored[0]["id"]
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/policies/{line_id}"))[0] == 404
    _, globex, _ = await world.call("outsider", "GET", "/admin/orgs/globex/policies")
    assert [line["id"] for line in globex["items"]] == [line_id]


async def test_global_lines_for_superadmins(world: World) -> None:
    """Superadmins add global lines (any org, admin objects) but never let a role inherit superadmin."""
    status, _, _ = await world.call(
        "superadmin", "POST", "/admin/policies", {"lines": ["p, viewer, *, admin:/orgs/:org/audit, GET"]}
    )
    assert status == 201
    assert (await world.call("viewer", "GET", "/admin/orgs/acme/audit"))[0] == 200
    status, problem, _ = await world.call(
        "superadmin", "POST", "/admin/policies", {"lines": ["g, viewer, superadmin, *"]}
    )
    assert status == 422
    assert problem["field"] == "lines[0]"


async def test_check_and_explain_answer_why(world: World) -> None:
    """check says allow/deny; explain names the deciding line and the subject's roles, or deny by default."""
    body = {"subject": "viewer@acme.test", "path": "/api/orders", "method": "GET"}
    status, checked, _ = await world.call("admin", "POST", "/admin/orgs/acme/check", body)
    assert status == 200 and checked == {"allowed": True, "subject": "user:" + world.ids["viewer"]}
    _, explained, _ = await world.call("admin", "POST", "/admin/orgs/acme/explain", body)
    assert explained["rule"] == ["p", "viewer", "*", "/*", "GET", "allow"]
    assert explained["roles"] == ["viewer"]
    _, denied, _ = await world.call("admin", "POST", "/admin/orgs/acme/explain", {**body, "method": "DELETE"})
    assert denied["allowed"] is False and denied["rule"] is None and "deny by default" in denied["reason"]
    _, as_role, _ = await world.call(
        "admin",
        "POST",
        "/admin/orgs/acme/check",
        {"subject": "member", "path": "admin:/orgs/acme/policies", "method": "POST"},
    )
    assert as_role["allowed"] is False
    for bad, field in (({**body, "path": "/a%2Fb"}, "path"), ({**body, "method": "BREW"}, "method")):
        status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/check", bad)
        assert status == 422 and problem["field"] == field


async def test_check_and_explain_stay_inside_their_org(world: World) -> None:
    """Another org's management objects and platform objects are 422 (never decided in this org); subjects
    outside the org, an existing email on the platform included, get exactly the answer of an unknown one."""
    for path in ("admin:/orgs/globex/members", "admin:/orgs/acmex", "admin:/policies", "admin:/users"):
        body = {"subject": "member", "path": path, "method": "GET"}
        for endpoint in ("check", "explain"):
            status, problem, _ = await world.call("admin", "POST", f"/admin/orgs/acme/{endpoint}", body)
            assert (status, problem["field"]) == (422, "path"), (path, endpoint)
    unknown = None
    for subject in ("nobody@nowhere.test", "outsider@globex.test", "user:" + world.ids["outsider"], "ghost-role"):
        body = {"subject": subject, "path": "/api/x", "method": "GET"}
        status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/explain", body)
        assert status == 404, subject
        assert world.ids["outsider"] not in json.dumps(problem)
        unknown = unknown or problem
        assert problem == unknown, "every outsider is answered like an unknown subject"


async def test_a_denial_carries_a_decision_id_found_in_the_audit_log(world: World) -> None:
    """The 403 of a proxied or admin denial names a decision id; the audit log has the event under that id."""
    status, _, raw = await world.gateway.call("DELETE", "/api/x", token=world.tokens["viewer"], org="acme")
    assert status == 403
    proxied = json.loads(raw)["decision_id"]
    _, admin_denial, _ = await world.call("viewer", "POST", "/admin/orgs/acme/roles", {})
    events = {event.get("decision_id"): event for event in world.gateway.audit_events()}
    assert events[proxied]["granted"] is False and events[proxied]["path"] == "/api/x"
    assert events[admin_denial["decision_id"]]["path"] == "/admin/orgs/acme/roles"


# -- API keys and service accounts -----------------------------------------------------------------------


async def test_own_keys_are_shown_once_listed_without_secret_and_rotate(world: World) -> None:
    """A member creates a key (no-store, shown once), it works on the proxy, listings show only prefix and
    last four; rotation: both keys work until the old one is revoked."""
    status, created, headers = await world.call(
        "member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "laptop", "scopes": ["GET /api/*"]}
    )
    assert status == 201, created
    assert headers["Cache-Control"] == "no-store"
    old = created["key"]
    assert old.startswith("gw_live_") and old.endswith(created["details"]["last4"])
    _, listing, _ = await world.call("member", "GET", "/admin/orgs/acme/members/me/keys")
    assert [k["id"] for k in listing["items"]] == [created["details"]["id"]]
    assert old not in str(listing)
    _, new, _ = await world.call("member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "laptop 2"})
    for key in (old, new["key"]):
        assert (await world.gateway.call("GET", "/api/orders", headers={"X-API-Key": key}))[0] == 200
    assert (await world.gateway.call("POST", "/api/orders", headers={"X-API-Key": old}))[0] == 403  # scoped
    key_id = created["details"]["id"]
    assert (await world.call("member", "DELETE", f"/admin/orgs/acme/members/me/keys/{key_id}"))[0] == 204
    assert (await world.gateway.call("GET", "/api/orders", headers={"X-API-Key": old}))[0] == 401
    assert (await world.gateway.call("GET", "/api/orders", headers={"X-API-Key": new["key"]}))[0] == 200


async def test_keys_of_others(world: World) -> None:
    """Nobody mints a key acting as someone else; a member cannot revoke another's key; an admin can."""
    _, created, _ = await world.call("member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "m"})
    key_id = created["details"]["id"]
    member = world.ids["member"]
    assert (await world.call("admin", "POST", f"/admin/orgs/acme/members/{member}/keys", {"name": "x"}))[0] == 403
    assert (await world.call("viewer", "DELETE", f"/admin/orgs/acme/members/me/keys/{key_id}"))[0] == 403
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/me/keys/{key_id}"))[0] == 404
    _, listed, _ = await world.call("admin", "GET", f"/admin/orgs/acme/members/{member}/keys")
    assert [k["id"] for k in listed["items"]] == [key_id]
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{member}/keys/{key_id}"))[0] == 204
    assert (await world.gateway.call("GET", "/api/orders", headers={"X-API-Key": created["key"]}))[0] == 401
    status, problem, _ = await world.call(
        "member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "x", "scopes": ["GET api"]}
    )
    assert status == 422 and problem["field"] == "scopes[0]"
    status, problem, _ = await world.call(
        "member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "x", "expires_in_days": 0}
    )
    assert status == 422 and problem["field"] == "expires_in_days"


async def test_key_allow_lists_are_normalised_validated_shown_and_kept(world: World) -> None:
    """`allowed_ips` on creation: addresses and networks, IPv4 and IPv6, in normal form and without duplicates,
    shown in the answer and the listings and kept by rotation; an invalid entry is 422 naming its index."""
    keys = "/admin/orgs/acme/members/me/keys"
    given = ["203.0.113.7", " 2001:DB8:0::/32", "198.51.100.0/24", "203.0.113.7/32", "::1"]
    status, created, _ = await world.call("member", "POST", keys, {"name": "ci", "allowed_ips": given})
    assert status == 201, created
    normal = ["203.0.113.7", "2001:db8::/32", "198.51.100.0/24", "::1"]
    assert created["details"]["allowed_ips"] == normal
    _, listing, _ = await world.call("member", "GET", keys)
    assert [k["allowed_ips"] for k in listing["items"]] == [normal]
    _, everyone, _ = await world.call("admin", "GET", "/admin/orgs/acme/keys")
    assert [k["allowed_ips"] for k in everyone["items"]] == [normal]
    _, plain, _ = await world.call("member", "POST", keys, {"name": "anywhere"})
    assert plain["details"]["allowed_ips"] == [], "no list: from anywhere"

    key_id = created["details"]["id"]
    status, rotated, _ = await world.call("member", "POST", f"{keys}/{key_id}/rotate", {"grace_seconds": 0})
    assert status == 201 and rotated["details"]["allowed_ips"] == normal, "rotation keeps the allow-list"

    bad = {
        "not an address": (["127.0.0.1", "localhost"], "allowed_ips[1]"),
        "host bits set": (["10.0.0.5/8"], "allowed_ips[0]"),
        "prefix too long": (["10.0.0.0/33"], "allowed_ips[0]"),
        "IPv6 prefix too long": (["2001:db8::/129"], "allowed_ips[0]"),
        "zone id": (["fe80::1%eth0"], "allowed_ips[0]"),
        "empty": ([""], "allowed_ips[0]"),
        "too many": ([f"10.0.{i // 256}.{i % 256}" for i in range(101)], "allowed_ips"),
    }
    for name, (entries, field) in bad.items():
        status, problem, headers = await world.call("member", "POST", keys, {"name": "x", "allowed_ips": entries})
        assert (status, problem.get("field")) == (422, field), name
        assert headers["Content-Type"].startswith("application/problem+json"), name
    hundred = [f"10.0.0.{i}" for i in range(100)]
    assert (await world.call("member", "POST", keys, {"name": "x", "allowed_ips": hundred}))[0] == 201


async def test_changing_a_key_allow_list(world: World) -> None:
    """PATCH replaces `allowed_ips`: the owner on `members/me`, an admin on any member's or service account's
    key, never a viewer, another member or an API key; a recent sign-in is needed; each change is audited; a
    revoked key is 409; invalid entries are 422 and change nothing."""
    _, created, _ = await world.call("member", "POST", "/admin/orgs/acme/members/me/keys", {"name": "ci"})
    key_id = created["details"]["id"]
    own = f"/admin/orgs/acme/members/me/keys/{key_id}"
    by_id = f"/admin/orgs/acme/members/{world.ids['member']}/keys/{key_id}"
    status, view, _ = await world.call("member", "PATCH", own, {"allowed_ips": ["192.0.2.0/24", "2001:DB8::1"]})
    assert status == 200, view
    assert view["id"] == key_id and view["allowed_ips"] == ["192.0.2.0/24", "2001:db8::1"]
    status, problem, _ = await world.call("member", "PATCH", own, {"allowed_ips": ["192.0.2.0/24", "nope"]})
    assert (status, problem["field"]) == (422, "allowed_ips[1]")
    assert (await world.call("member", "PATCH", own, {}))[0] in (400, 422), "the list is required"
    assert (await world.call("viewer", "PATCH", own, {"allowed_ips": []}))[0] == 403
    assert (await world.call("admin", "PATCH", own, {"allowed_ips": []}))[0] == 404, "not the admin's own key"
    status, view, _ = await world.call("admin", "PATCH", by_id, {"allowed_ips": ["192.0.2.7"]})
    assert status == 200 and view["allowed_ips"] == ["192.0.2.7"]
    _, listing, _ = await world.call("member", "GET", "/admin/orgs/acme/members/me/keys")
    assert listing["items"][0]["allowed_ips"] == ["192.0.2.7"]

    _, page, _ = await world.call("admin", "GET", "/admin/orgs/acme/audit?action=key.update")
    changes = [(event["before"]["allowed_ips"], event["after"]["allowed_ips"]) for event in page["items"]]
    assert changes == [(["192.0.2.0/24", "2001:db8::1"], ["192.0.2.7"]), ([], ["192.0.2.0/24", "2001:db8::1"])]
    assert page["items"][0]["actor"] == f"user:{world.ids['admin']}"

    key = await world.gateway.key("acme", "member@acme.test", name="own")
    status, problem, _ = await world.gateway.call("PATCH", own, headers={"X-API-Key": key}, json={"allowed_ips": []})
    assert status == 403, "a key never changes an allow-list (a stolen one would lift its own)"
    sid = jwt.decode(world.tokens["member"], options={"verify_signature": False})["sid"]
    issue = world.gateway.runtime.services.tokens.issue_access_token
    stale, _ = issue(world.ids["member"], session_id=sid, auth_time=0)
    status, _, raw = await world.gateway.call("PATCH", own, token=stale, json={"allowed_ips": []})
    assert (status, json.loads(raw)["type"]) == (403, "urn:gateway:problem:reauth-required")

    _, account, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/service-accounts", {"name": "deploy", "role": "member"}
    )
    sa_keys = f"/admin/orgs/acme/service-accounts/{account['user_id']}/keys"
    _, sa_key, _ = await world.call("admin", "POST", sa_keys, {"name": "ci", "allowed_ips": ["10.1.0.0/16"]})
    assert sa_key["details"]["allowed_ips"] == ["10.1.0.0/16"]
    sa_path = f"{sa_keys}/{sa_key['details']['id']}"
    status, view, _ = await world.call("admin", "PATCH", sa_path, {"allowed_ips": []})
    assert status == 200 and view["allowed_ips"] == []
    assert (await world.call("member", "PATCH", sa_path, {"allowed_ips": []}))[0] == 403

    assert (await world.call("member", "DELETE", own))[0] == 204
    assert (await world.call("member", "PATCH", own, {"allowed_ips": []}))[0] == 409


async def test_service_accounts_use_keys_only(world: World) -> None:
    """A service account holds a role, authenticates with its keys, cannot log in or own the org, and takes
    its keys with it when deleted."""
    status, account, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/service-accounts", {"name": "ci deploy", "role": "member"}
    )
    assert status == 201 and account["kind"] == "service" and account["email"] is None
    account_id = account["user_id"]
    status, problem, _ = await world.call(
        "admin", "POST", "/admin/orgs/acme/service-accounts", {"name": "boss", "role": "owner"}
    )
    assert status == 422 and problem["field"] == "role"
    _, created, _ = await world.call(
        "admin", "POST", f"/admin/orgs/acme/service-accounts/{account_id}/keys", {"name": "ci"}
    )
    key = created["key"]
    assert (await world.gateway.call("POST", "/api/deploys", headers={"X-API-Key": key}))[0] == 200
    assert (await world.gateway.call("DELETE", "/api/deploys", headers={"X-API-Key": key}))[0] == 403
    _, members, _ = await world.call("admin", "GET", "/admin/orgs/acme/members?limit=200")
    assert {m["user_id"]: m["kind"] for m in members["items"]}[account_id] == "service"
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/members/{account_id}"))[0] == 409
    body = {"user_id": account_id, "role": "viewer"}
    assert (await world.call("outsider", "POST", "/admin/orgs/globex/members", body))[0] == 422
    assert (await world.call("admin", "DELETE", f"/admin/orgs/acme/service-accounts/{account_id}"))[0] == 204
    assert (await world.gateway.call("POST", "/api/deploys", headers={"X-API-Key": key}))[0] == 401
    assert (await world.call("admin", "GET", f"/admin/orgs/acme/service-accounts/{account_id}/keys"))[0] == 404


async def test_api_keys_on_the_admin_api_stay_in_their_org(world: World) -> None:
    """An unscoped key acts as its owner in its own org only; a scoped key never reaches the admin plane."""
    key = await world.gateway.key("acme", "admin@acme.test")
    scoped = await world.gateway.key("acme", "admin@acme.test", name="scoped", scopes=["* /*"])
    call = world.gateway.call
    assert (await call("GET", "/admin/orgs/acme/members", headers={"X-API-Key": key}))[0] == 200
    assert (await call("GET", "/admin/orgs/globex/members", headers={"X-API-Key": key}))[0] == 403
    assert (await call("GET", "/admin/orgs", headers={"X-API-Key": key}))[0] == 403
    assert (await call("GET", "/admin/orgs/acme/members", headers={"X-API-Key": scoped}))[0] == 403


async def test_a_key_creates_keys_only_when_scoped_to_and_never_a_wider_or_longer_one(world: World) -> None:
    """A key without scopes cannot create keys (nor skip the recent-sign-in rule through them); one scoped to
    `POST admin:/orgs/acme/members/me/keys` can, but only keys scoped within its own scopes and expiring no later
    than itself."""
    mint = "POST admin:/orgs/acme/members/me/keys"
    plain = await world.gateway.key("acme", "admin@acme.test")
    minter = await world.gateway.key(
        "acme", "admin@acme.test", name="minter", scopes=[mint, "GET /api/*"], expires_in_days=10
    )
    path = "/admin/orgs/acme/members/me/keys"

    async def create(key: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
        status, _, raw = await world.gateway.call("POST", path, headers={"X-API-Key": key}, json=body)
        return status, json.loads(raw)

    status, answer = await create(plain, {"name": "child"})
    assert status == 403 and mint.split(" ", 1)[1] in answer["detail"]
    status, answer = await create(minter, {"name": "child", "expires_in_days": 5})
    assert (status, answer["field"]) == (422, "scopes"), "a key made by a key is scoped"
    status, answer = await create(minter, {"name": "child", "scopes": ["* /*"], "expires_in_days": 5})
    assert (status, answer["field"]) == (422, "scopes[0]")
    status, answer = await create(minter, {"name": "child", "scopes": ["GET /api/orders/*"]})
    assert (status, answer["field"]) == (422, "expires_in_days"), "never longer-lived than its creator"
    status, answer = await create(minter, {"name": "child", "scopes": ["GET /api/orders/*"], "expires_in_days": 30})
    assert status == 422
    status, answer = await create(minter, {"name": "child", "scopes": ["GET /api/orders/*"], "expires_in_days": 5})
    assert status == 201, answer
    child = str(answer["key"])
    assert (await world.gateway.call("GET", "/api/orders/1", headers={"X-API-Key": child}))[0] == 200
    assert (await world.gateway.call("DELETE", "/api/orders/1", headers={"X-API-Key": child}))[0] == 403
    assert (await create(child, {"name": "grandchild", "scopes": ["GET /api/orders/*"], "expires_in_days": 1}))[
        0
    ] == 403, "the child was not given the right to mint"


async def test_a_key_with_an_allow_list_mints_keys_only_within_it(world: World) -> None:
    """A minting key restricted to some addresses cannot make a key that escapes them: the new key needs an
    allow-list, each entry inside one of the creator's networks (IPv4 or IPv6)."""
    minter = await world.gateway.key(
        "acme",
        "admin@acme.test",
        name="minter",
        scopes=["POST admin:/orgs/acme/members/me/keys", "GET /api/*"],
        allowed_ips=["127.0.0.0/8", "2001:db8::/32"],
    )

    async def create(allowed_ips: list[str] | None) -> tuple[int, dict[str, Any]]:
        body: dict[str, object] = {"name": "child", "scopes": ["GET /api/*"]}
        if allowed_ips is not None:
            body["allowed_ips"] = allowed_ips
        status, _, raw = await world.gateway.call(
            "POST", "/admin/orgs/acme/members/me/keys", headers={"X-API-Key": minter}, json=body
        )
        return status, json.loads(raw)

    refused = {
        "no list": (None, "allowed_ips"),
        "wider": (["127.0.0.0/8", "10.0.0.0/8"], "allowed_ips[1]"),
        "overlapping": (["2001:db8::/31"], "allowed_ips[0]"),
        "the other family": (["::ffff:127.0.0.1"], "allowed_ips[0]"),
    }
    for name, (entries, field) in refused.items():
        status, answer = await create(entries)
        assert (status, answer.get("field")) == (422, field), name
    status, answer = await create(["127.0.0.1", "2001:db8:1::/48"])
    assert status == 201, answer
    assert answer["details"]["allowed_ips"] == ["127.0.0.1", "2001:db8:1::/48"]
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": answer["key"]}))[0] == 200


# -- isolation, pagination, audit ------------------------------------------------------------------------


async def test_cross_org_ids_are_not_found_and_change_nothing(world: World) -> None:
    """An acme admin naming globex's member, key, service account, role or line gets 404/403; globex is intact."""
    outsider = world.ids["outsider"]
    _, sa, _ = await world.call(
        "outsider", "POST", "/admin/orgs/globex/service-accounts", {"name": "g", "role": "viewer"}
    )
    _, gkey, _ = await world.call(
        "outsider", "POST", f"/admin/orgs/globex/service-accounts/{sa['user_id']}/keys", {"name": "g"}
    )
    await world.call("outsider", "POST", "/admin/orgs/globex/roles", {"name": "gonly"})
    _, gline, _ = await world.call(
        "outsider", "POST", "/admin/orgs/globex/policies", {"lines": ["p, viewer, globex, /g, GET"]}
    )
    # Naming globex's things under acme (where the admin may act) finds nothing there: 404. Acting under globex
    # itself is refused by the enforcer: 403.
    attempts: list[tuple[str, str, dict[str, object] | None, int]] = [
        ("PATCH", f"/admin/orgs/acme/members/{outsider}", {"role": "viewer"}, 404),
        ("DELETE", f"/admin/orgs/acme/members/{outsider}", None, 404),
        ("DELETE", f"/admin/orgs/acme/members/{outsider}/keys/{gkey['details']['id']}", None, 404),
        ("DELETE", f"/admin/orgs/acme/service-accounts/{sa['user_id']}", None, 404),
        ("DELETE", f"/admin/orgs/acme/service-accounts/{sa['user_id']}/keys/{gkey['details']['id']}", None, 404),
        ("PUT", "/admin/orgs/acme/roles/gonly", {"inherits": []}, 404),
        ("DELETE", "/admin/orgs/acme/roles/gonly", None, 404),
        ("DELETE", f"/admin/orgs/acme/policies/{gline[0]['id']}", None, 404),
        ("PATCH", f"/admin/orgs/globex/members/{outsider}", {"role": "viewer"}, 403),
    ]
    for method, path, body, expected in attempts:
        status, problem, _ = await world.call("admin", method, path, body)
        assert status == expected, (method, path, status, problem)
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": gkey["key"]}, org="globex"))[0] == 200
    _, roles, _ = await world.call("outsider", "GET", "/admin/orgs/globex/roles")
    assert "gonly" in [r["name"] for r in roles["items"]]
    _, members, _ = await world.call("outsider", "GET", "/admin/orgs/globex/members")
    assert {m["user_id"]: m["role"] for m in members["items"]}[outsider] == "owner"


async def test_lists_are_paginated_in_a_stable_order(world: World) -> None:
    """Pages follow one another without gaps or repeats, even when rows are added meanwhile; bad paging
    parameters are 422 naming the field."""
    for n in range(5):
        await world.gateway.user(f"p{n}@acme.test", org="acme", role="viewer")
    seen: list[str] = []
    cursor = None
    added = False
    while True:
        query = f"?limit=3{'&cursor=' + cursor if cursor else ''}"
        status, page, _ = await world.call("admin", "GET", "/admin/orgs/acme/members" + query)
        assert status == 200 and len(page["items"]) <= 3
        seen.extend(m["user_id"] for m in page["items"])
        if not added:
            await world.gateway.user("late@acme.test", org="acme", role="viewer")
            added = True
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert len(seen) in (9, 10)  # the late member shows up only if their id sorts after the cursor
    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?cursor=%25%25", "cursor"),
        ("?limit=x", "limit"),
    ):
        status, problem, _ = await world.call("admin", "GET", "/admin/orgs/acme/members" + query)
        assert status == 422 and problem["field"] == field, (query, problem)


async def test_every_change_is_audited_with_actor_before_after_and_request_id(world: World) -> None:
    """Admin changes write audit events in their own transaction; the org's log filters by action and actor."""
    viewer = world.ids["viewer"]
    await world.call(
        "admin", "PATCH", f"/admin/orgs/acme/members/{viewer}", {"role": "member"}, headers={"X-Request-Id": "req-42"}
    )
    await world.call("admin", "PATCH", f"/admin/orgs/acme/members/{world.ids['owner']}", {"role": "viewer"})  # 403
    status, page, _ = await world.call("owner", "GET", "/admin/orgs/acme/audit?action=member.role")
    assert status == 200
    (event,) = page["items"]
    assert event["actor"] == "user:" + world.ids["admin"]
    assert (event["target"], event["before"], event["after"]) == (viewer, {"role": "viewer"}, {"role": "member"})
    assert event["request_id"] == "req-42" and event["org"] == "acme"
    _, by_actor, _ = await world.call("owner", "GET", f"/admin/orgs/acme/audit?actor=user:{world.ids['admin']}")
    assert [e["action"] for e in by_actor["items"]] == ["member.role"]
    _, globex, _ = await world.call("outsider", "GET", "/admin/orgs/globex/audit?action=member.role")
    assert globex["items"] == []
    _, everything, _ = await world.call("superadmin", "GET", "/admin/audit?limit=200")
    assert any(e["action"] == "org.create" for e in everything["items"])
    status, problem, _ = await world.call("owner", "GET", "/admin/orgs/acme/audit?since=yesterday")
    assert status == 422 and problem["field"] == "since"


async def test_a_failed_change_leaves_no_audit_event(world: World) -> None:
    """When a change is refused, neither the change nor its audit event is stored."""
    owner = world.ids["owner"]
    assert (await world.call("owner", "DELETE", f"/admin/orgs/acme/members/{owner}"))[0] == 409
    _, page, _ = await world.call("owner", "GET", "/admin/orgs/acme/audit?action=member.remove")
    assert page["items"] == []


async def test_login_still_works_for_people_not_service_accounts(world: World) -> None:
    """A service account has no email or password, so no login answer differs for it."""
    status, _, _ = await world.gateway.call(
        "POST", "/auth/login", json={"email": "viewer@acme.test", "password": PASSWORD}
    )
    assert status == 200


async def test_a_superadmin_disables_and_enables_a_user(world: World) -> None:
    """Disabling ends every session (access and refresh tokens) and key at once; enabling restores the grants
    for new logins."""
    member = world.ids["member"]
    key = await world.gateway.key("acme", "member@acme.test")
    _, _, tokens = await world.gateway.call(
        "POST", "/auth/login", json={"email": "member@acme.test", "password": PASSWORD}
    )
    refresh = json.loads(tokens)["refresh_token"]
    _, found, _ = await world.call("superadmin", "GET", "/admin/users?email=MEMBER@acme.test")
    assert [u["id"] for u in found["items"]] == [member]
    status, user, _ = await world.call("superadmin", "POST", f"/admin/users/{member}/disable")
    assert status == 200
    assert user["disabled"] is True
    assert await _proxied(world, "member", "GET") == 401
    assert (await world.gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401
    assert (await world.call("member", "GET", "/admin/orgs"))[0] == 401
    assert (await world.call("member", "GET", "/admin/orgs/acme"))[0] == 401
    assert (await world.gateway.call("POST", "/auth/refresh", json={"refresh_token": refresh}))[0] == 401
    assert (await world.call("superadmin", "POST", f"/admin/users/{member}/enable"))[0] == 200
    assert await _proxied(world, "member", "GET") == 401, "the old session stays ended"
    world.tokens["member"] = await world.gateway.login("member@acme.test")
    assert await _proxied(world, "member", "GET") == 200
    _, events, _ = await world.call("superadmin", "GET", "/admin/audit?action=user.disable")
    assert [e["target"] for e in events["items"]] == [member]


async def test_policy_lines_cannot_close_an_inheritance_cycle(world: World) -> None:
    """A `g` line through the policies API is checked together with the role's existing parents: a cycle
    through them is 422, and a second parent leading to owner needs an owner."""
    await world.call("admin", "POST", "/admin/orgs/acme/roles", {"name": "a", "inherits": ["viewer"]})
    await world.call("admin", "POST", "/admin/orgs/acme/roles", {"name": "b", "inherits": ["a"]})
    status, problem, _ = await world.call("admin", "POST", "/admin/orgs/acme/policies", {"lines": ["g, a, b, acme"]})
    assert status == 422
    assert "cycle" in problem["detail"]
    assert (await world.call("admin", "POST", "/admin/orgs/acme/policies", {"lines": ["g, b, owner, acme"]}))[0] == 403
    assert (await world.call("admin", "POST", "/admin/orgs/acme/policies", {"lines": ["g, b, member, acme"]}))[0] == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/admin/policies/99999999999999999999"),
        ("DELETE", "/admin/policies/0"),
        ("DELETE", "/admin/orgs/acme/policies/4294967296"),
        ("GET", "/admin/orgs/acme/members?cursor=WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDBd"),  # [100000000000000000000]
        ("GET", "/admin/audit?cursor=WyJcdTAwMDAiXQ"),  # ["\u0000"]
        ("GET", "/admin/orgs/acme/members?limit=99999999999999999999"),
    ],
)
async def test_out_of_range_ids_and_cursors_are_422(world: World, method: str, path: str) -> None:
    """Numbers the store cannot hold and cursors this API never returned are refused before any query."""
    status, answer, _ = await world.call("superadmin", method, path)
    assert status == 422, answer


@pytest.mark.parametrize("path", ["/admin/orgs", "/admin/orgs/acme/members", "/admin/policies/1"])
async def test_options_on_admin_routes_lists_the_methods(world: World, path: str) -> None:
    """OPTIONS answers 204 with an Allow header (with or without credentials), never a 500."""
    for who in ("superadmin", None):
        status, _, headers = await world.call(who, "OPTIONS", path)
        assert status == 204
        assert "OPTIONS" in headers["Allow"]


async def _boss_role(world: World) -> None:
    """As the owner: a custom role `boss` inheriting owner, held by the admin (who thereby holds owner)."""
    status, body, _ = await world.call(
        "owner", "POST", "/admin/orgs/acme/roles", {"name": "boss", "inherits": ["owner"]}
    )
    assert status == 201, body
    status, body, _ = await world.call(
        "owner", "PATCH", f"/admin/orgs/acme/members/{world.ids['member']}", {"role": "boss"}
    )
    assert status == 200, body


async def test_owner_powers_cannot_be_taken_away_through_a_role(world: World) -> None:
    """Without owner rights, nobody changes who holds owner indirectly: editing a role that inherits owner so it
    no longer does, deleting it with its members moved, or deleting the `g` line behind it are all 403."""
    await _boss_role(world)
    replaced = await world.call("admin", "PUT", "/admin/orgs/acme/roles/boss", {"inherits": ["viewer"]})
    assert replaced[0] == 403, replaced
    deleted = await world.call("admin", "DELETE", "/admin/orgs/acme/roles/boss?move_to=viewer")
    assert deleted[0] == 403, deleted
    # The same through raw lines: an owner makes `chief` inherit owner with a g line; the admin cannot remove it.
    assert (await world.call("owner", "POST", "/admin/orgs/acme/roles", {"name": "chief"}))[0] == 201
    status, lines, _ = await world.call(
        "owner", "POST", "/admin/orgs/acme/policies", {"lines": ["g, chief, owner, acme"]}
    )
    assert status == 201, lines
    assert (await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{world.ids['viewer']}", {"role": "chief"}))[
        0
    ] == 200
    removed = await world.call("admin", "DELETE", f"/admin/orgs/acme/policies/{lines[0]['id']}")
    assert removed[0] == 403, removed
    assert (await world.call("owner", "DELETE", f"/admin/orgs/acme/policies/{lines[0]['id']}"))[0] == 204


async def test_service_accounts_never_hold_owner_by_any_path(world: World) -> None:
    """A role a service account holds cannot be made to inherit owner, by editing it or by a raw `g` line."""
    assert (await world.call("owner", "POST", "/admin/orgs/acme/roles", {"name": "robot"}))[0] == 201
    status, account, _ = await world.call(
        "owner", "POST", "/admin/orgs/acme/service-accounts", {"name": "ci", "role": "robot"}
    )
    assert status == 201, account
    edited = await world.call("owner", "PUT", "/admin/orgs/acme/roles/robot", {"inherits": ["owner"]})
    assert edited[0] == 422, edited
    lined = await world.call(
        "owner", "POST", "/admin/orgs/acme/policies", {"lines": ["g, robot, admin, acme", "g, admin, owner, acme"]}
    )
    assert lined[0] == 422, lined
    status, roles, _ = await world.call("owner", "GET", "/admin/orgs/acme/roles/robot")
    assert roles["inherits"] == [], "nothing changed"


async def test_the_last_owner_cannot_be_lost_through_a_role(world: World) -> None:
    """When the only owner holds owner through a custom role, dropping owner from that role is refused."""
    status, body, _ = await world.call(
        "owner", "POST", "/admin/orgs/acme/roles", {"name": "founder", "inherits": ["owner"]}
    )
    assert status == 201, body
    me = world.ids["owner"]
    assert (await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{me}", {"role": "viewer"}))[0] == 409
    assert (
        await world.call("superadmin", "PATCH", f"/admin/orgs/acme/members/{world.ids['admin']}", {"role": "founder"})
    )[0] == 200
    assert (await world.call("owner", "PATCH", f"/admin/orgs/acme/members/{me}", {"role": "viewer"}))[0] == 200
    refused = await world.call("admin", "PUT", "/admin/orgs/acme/roles/founder", {"inherits": ["admin"]})
    assert refused[0] == 409, refused
