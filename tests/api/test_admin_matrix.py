"""Every /admin endpoint, called by every kind of caller: the enforcer allows exactly the table's roles.

Requests are built so that an allowed caller gets past authorization and then fails harmlessly (a missing
field, an unknown id): the assertion is 401/403 for the denied, and exactly the row's answer for the allowed. A
route added under /admin without a row here fails `test_every_admin_route_has_a_row`.
"""

from __future__ import annotations

import uuid

import pytest
from litestar import Litestar

from gateway.asgi import create_gateway
from tests.api.admin_helpers import World, build_world
from tests.conftest import Gateway, gateway_settings

CALLERS = ("owner", "admin", "member", "viewer", "outsider", "superadmin", None)
VIEWER = {"viewer", "member", "admin", "owner", "superadmin"}
MEMBER = {"member", "admin", "owner", "superadmin"}
ADMIN = {"admin", "owner", "superadmin"}
OWNER = {"owner", "superadmin"}
SUPER = {"superadmin"}
ANYONE = {"owner", "admin", "member", "viewer", "outsider", "superadmin"}
NOBODY = str(uuid.uuid4())

# (method, route template) -> (concrete path, body, callers allowed, what an allowed caller gets: the request is
# built to fail harmlessly after authorization, e.g. 422 for a missing field or 404 for an unknown id)
TABLE: dict[tuple[str, str], tuple[str, object, set[str], int]] = {
    ("GET", "/admin/orgs"): ("/admin/orgs", None, ANYONE, 200),
    ("POST", "/admin/orgs"): ("/admin/orgs", {}, SUPER, 422),
    ("GET", "/admin/orgs/{org}"): ("/admin/orgs/acme", None, VIEWER, 200),
    ("PATCH", "/admin/orgs/{org}"): ("/admin/orgs/acme", {}, ADMIN, 422),
    ("POST", "/admin/orgs/{org}/archive"): ("/admin/orgs/acme/archive", None, OWNER, 200),
    ("POST", "/admin/orgs/{org}/transfer"): ("/admin/orgs/acme/transfer", {"to": NOBODY}, OWNER, 404),
    ("DELETE", "/admin/orgs/{org}"): ("/admin/orgs/acme", None, SUPER, 409),
    ("POST", "/admin/orgs/{org}/restore"): ("/admin/orgs/acme/restore", None, SUPER, 200),
    ("GET", "/admin/orgs/{org}/members"): ("/admin/orgs/acme/members", None, VIEWER, 200),
    ("POST", "/admin/orgs/{org}/members"): ("/admin/orgs/acme/members", {}, ADMIN, 422),
    ("GET", "/admin/orgs/{org}/members/{member}"): (f"/admin/orgs/acme/members/{NOBODY}", None, VIEWER, 404),
    ("PATCH", "/admin/orgs/{org}/members/{member}"): (
        f"/admin/orgs/acme/members/{NOBODY}",
        {"role": "viewer"},
        ADMIN,
        404,
    ),
    ("DELETE", "/admin/orgs/{org}/members/{member}"): (f"/admin/orgs/acme/members/{NOBODY}", None, ADMIN, 404),
    ("GET", "/admin/orgs/{org}/invitations"): ("/admin/orgs/acme/invitations", None, ADMIN, 200),
    ("POST", "/admin/orgs/{org}/invitations"): ("/admin/orgs/acme/invitations", {}, ADMIN, 422),
    ("DELETE", "/admin/orgs/{org}/invitations/{invitation}"): (
        f"/admin/orgs/acme/invitations/{NOBODY}",
        None,
        ADMIN,
        404,
    ),
    ("GET", "/admin/orgs/{org}/members/{member}/keys"): (f"/admin/orgs/acme/members/{NOBODY}/keys", None, ADMIN, 404),
    ("POST", "/admin/orgs/{org}/members/{member}/keys"): ("/admin/orgs/acme/members/me/keys", {}, MEMBER, 422),
    ("DELETE", "/admin/orgs/{org}/members/{member}/keys/{key}"): (
        f"/admin/orgs/acme/members/{NOBODY}/keys/k1",
        None,
        ADMIN,
        404,
    ),
    ("PATCH", "/admin/orgs/{org}/members/{member}/keys/{key}"): (
        f"/admin/orgs/acme/members/{NOBODY}/keys/k1",
        {"allowed_ips": []},
        ADMIN,
        404,
    ),
    ("GET", "/admin/orgs/{org}/keys"): ("/admin/orgs/acme/keys", None, ADMIN, 200),
    ("POST", "/admin/orgs/{org}/members/{member}/keys/{key}/rotate"): (
        "/admin/orgs/acme/members/me/keys/k1/rotate",
        {},
        MEMBER,
        404,
    ),
    ("POST", "/admin/orgs/{org}/service-accounts/{account}/keys/{key}/rotate"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}/keys/k1/rotate",
        {},
        ADMIN,
        404,
    ),
    ("GET", "/admin/orgs/{org}/roles"): ("/admin/orgs/acme/roles", None, VIEWER, 200),
    ("POST", "/admin/orgs/{org}/roles"): ("/admin/orgs/acme/roles", {}, ADMIN, 422),
    ("GET", "/admin/orgs/{org}/roles/{role}"): ("/admin/orgs/acme/roles/viewer", None, VIEWER, 200),
    ("PUT", "/admin/orgs/{org}/roles/{role}"): ("/admin/orgs/acme/roles/nope", {}, ADMIN, 404),
    ("DELETE", "/admin/orgs/{org}/roles/{role}"): ("/admin/orgs/acme/roles/nope", None, ADMIN, 404),
    ("GET", "/admin/orgs/{org}/policies"): ("/admin/orgs/acme/policies", None, ADMIN, 200),
    ("POST", "/admin/orgs/{org}/policies"): ("/admin/orgs/acme/policies", {"lines": []}, ADMIN, 422),
    ("DELETE", "/admin/orgs/{org}/policies/{line}"): ("/admin/orgs/acme/policies/999999", None, ADMIN, 404),
    ("POST", "/admin/orgs/{org}/policies/preview"): ("/admin/orgs/acme/policies/preview", {}, ADMIN, 422),
    ("GET", "/admin/orgs/{org}/policy-versions"): ("/admin/orgs/acme/policy-versions", None, ADMIN, 200),
    ("GET", "/admin/orgs/{org}/policy-versions/{version}"): ("/admin/orgs/acme/policy-versions/999", None, ADMIN, 404),
    ("GET", "/admin/orgs/{org}/policy-versions/{version}/diff"): (
        "/admin/orgs/acme/policy-versions/999/diff",
        None,
        ADMIN,
        404,
    ),
    ("POST", "/admin/orgs/{org}/policy-versions/{version}/rollback"): (
        "/admin/orgs/acme/policy-versions/999/rollback",
        None,
        ADMIN,
        404,
    ),
    ("POST", "/admin/orgs/{org}/policy-versions/{version}/preview"): (
        "/admin/orgs/acme/policy-versions/999/preview",
        None,
        ADMIN,
        404,
    ),
    ("POST", "/admin/orgs/{org}/check"): ("/admin/orgs/acme/check", {}, ADMIN, 422),
    ("POST", "/admin/orgs/{org}/explain"): ("/admin/orgs/acme/explain", {}, ADMIN, 422),
    ("POST", "/admin/orgs/{org}/check/batch"): ("/admin/orgs/acme/check/batch", {}, ADMIN, 422),
    ("POST", "/admin/orgs/{org}/who-can"): ("/admin/orgs/acme/who-can", {}, ADMIN, 422),
    ("GET", "/admin/orgs/{org}/subjects/{subject}/lines"): (
        f"/admin/orgs/acme/subjects/{NOBODY}/lines",
        None,
        ADMIN,
        404,
    ),
    ("GET", "/admin/orgs/{org}/audit"): ("/admin/orgs/acme/audit", None, ADMIN, 200),
    ("GET", "/admin/orgs/{org}/audit/export"): ("/admin/orgs/acme/audit/export", None, ADMIN, 200),
    ("GET", "/admin/orgs/{org}/service-accounts"): ("/admin/orgs/acme/service-accounts", None, ADMIN, 200),
    ("POST", "/admin/orgs/{org}/service-accounts"): ("/admin/orgs/acme/service-accounts", {}, ADMIN, 422),
    ("DELETE", "/admin/orgs/{org}/service-accounts/{account}"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}",
        None,
        ADMIN,
        404,
    ),
    ("GET", "/admin/orgs/{org}/service-accounts/{account}/keys"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}/keys",
        None,
        ADMIN,
        404,
    ),
    ("POST", "/admin/orgs/{org}/service-accounts/{account}/keys"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}/keys",
        {},
        ADMIN,
        422,
    ),
    ("PATCH", "/admin/orgs/{org}/service-accounts/{account}/keys/{key}"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}/keys/k1",
        {"allowed_ips": []},
        ADMIN,
        404,
    ),
    ("DELETE", "/admin/orgs/{org}/service-accounts/{account}/keys/{key}"): (
        f"/admin/orgs/acme/service-accounts/{NOBODY}/keys/k1",
        None,
        ADMIN,
        404,
    ),
    ("GET", "/admin/policies"): ("/admin/policies", None, SUPER, 200),
    ("POST", "/admin/policies"): ("/admin/policies", {"lines": []}, SUPER, 422),
    ("DELETE", "/admin/policies/{line}"): ("/admin/policies/999999", None, SUPER, 404),
    ("GET", "/admin/shadow"): ("/admin/shadow", None, SUPER, 404),
    ("POST", "/admin/shadow"): ("/admin/shadow", {}, SUPER, 422),
    ("POST", "/admin/shadow/promote"): ("/admin/shadow/promote", None, SUPER, 404),
    ("DELETE", "/admin/shadow"): ("/admin/shadow", None, SUPER, 404),
    ("GET", "/admin/audit"): ("/admin/audit", None, SUPER, 200),
    ("GET", "/admin/audit/export"): ("/admin/audit/export", None, SUPER, 200),
    ("GET", "/admin/users"): ("/admin/users", None, SUPER, 200),
    ("POST", "/admin/users/{user}/disable"): (f"/admin/users/{NOBODY}/disable", None, SUPER, 404),
    ("POST", "/admin/users/{user}/enable"): (f"/admin/users/{NOBODY}/enable", None, SUPER, 404),
}


def _admin_routes(app: Litestar) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        if not route.path.startswith("/admin") or route.path.startswith("/admin/schema"):
            continue
        template = route.path_format  # parameters without their types
        for method in getattr(route, "methods", ()):
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, template.rstrip("/") or "/"))
    return found


def test_every_admin_route_has_a_row(tmp_path: object) -> None:
    """The table covers exactly the /admin routes the app serves: a new endpoint needs a row."""
    front = create_gateway(gateway_settings("sqlite+aiosqlite:///unused.db", "http://127.0.0.1:9"))
    assert isinstance(front.control, Litestar)
    assert _admin_routes(front.control) == set(TABLE)


@pytest.fixture
async def world(gateway: Gateway) -> World:
    return await build_world(gateway)


async def test_each_role_gets_exactly_its_endpoints(world: World) -> None:
    """Allowed callers pass authorization and get the row's answer; everyone else gets 403, anonymous 401."""
    wrong = []
    for (method, template), (path, body, allowed, expected) in TABLE.items():
        for who in CALLERS:
            status, answer, headers = await world.call(who, method, path, body)
            if who is None:
                ok = status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
            elif who in allowed:
                ok = status == expected
            else:
                ok = status == 403 and bool(answer.get("decision_id") or "own organization" in answer["detail"])
            if not ok:
                wrong.append((method, template, who, status, answer))
            if method == "POST" and template.endswith("/archive") and status == 200:
                await world.call("superadmin", "POST", "/admin/orgs/acme/restore")
    assert wrong == [], "\n".join(map(str, wrong))
