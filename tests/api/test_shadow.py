"""Shadow policies through real HTTP: a candidate decided beside the live policy on every proxied request shows
the would-be answers without changing any, then is promoted to live in one step or dropped."""

from __future__ import annotations

from typing import Any

from tests.api.admin_helpers import World, build_world
from tests.conftest import Gateway


async def _proxied(world: World, who: str, method: str, path: str) -> int:
    status, _, _ = await world.gateway.call(method, path, token=world.tokens[who], headers={"x-org": "acme"})
    return status


async def _report(world: World) -> tuple[int, Any]:
    status, body, _ = await world.call("superadmin", "GET", "/admin/shadow")
    return status, body


async def test_a_shadow_policy_counts_would_be_denials_and_refuses_nothing(gateway: Gateway) -> None:
    world = await build_world(gateway)
    candidate = {"name": "lock orders", "add": ["p, viewer, acme, /api/orders, GET, deny"]}
    status, attached, _ = await world.call("superadmin", "POST", "/admin/shadow", candidate)
    assert status == 201, attached
    assert (attached["mode"], attached["add"]) == ("changes", ["p, viewer, acme, /api/orders, GET, deny"])
    assert (await world.call("superadmin", "POST", "/admin/shadow", candidate))[0] == 409, "one at a time"
    assert (await world.call("owner", "POST", "/admin/shadow", candidate))[0] == 403, "platform-wide only"

    answers = [await _proxied(world, "viewer", "GET", "/api/orders") for _ in range(3)]
    answers.append(await _proxied(world, "member", "POST", "/api/orders"))
    assert answers == [200, 200, 200, 200], "the live policy alone decides"
    assert await _proxied(world, "viewer", "DELETE", "/api/orders") == 403, "and still denies what it denies"

    status, report = await _report(world)
    assert status == 200
    assert report["compared"] == 5
    assert (report["would_deny"], report["would_allow"]) == (3, 0)
    (difference,) = report["differences"]
    assert (difference["route"], difference["org"], difference["count"]) == ("/api", "acme", 3)
    assert (difference["live_allowed"], difference["shadow_allowed"]) == (True, False)
    assert difference["live_rule"] == "p, viewer, *, /*, GET, allow"
    assert difference["shadow_rule"] == "p, viewer, acme, /api/orders, GET, deny"
    assert difference["sample"] == {"subject": "user:" + world.ids["viewer"], "path": "/api/orders", "method": "GET"}
    status, _, raw = await gateway.call("GET", "/metrics")
    text = raw.decode()
    assert 'gateway_shadow_differences_total{kind="would_deny",org="acme",route="/api"} 3.0' in text
    assert "gateway_shadow_compared_total 5.0" in text

    status, promoted, _ = await world.call("superadmin", "POST", "/admin/shadow/promote")
    assert (status, promoted["status"]) == (200, "promoted")
    assert await _proxied(world, "viewer", "GET", "/api/orders") == 403, "live at once"
    assert (await _report(world))[0] == 404
    status, history, _ = await world.call("admin", "GET", "/admin/orgs/acme/policy-versions")
    assert history["items"][0]["action"] == "shadow.promote"
    status, audit, _ = await world.call("superadmin", "GET", "/admin/audit?action=shadow.promote")
    assert [event["target"] for event in audit["items"]] == [str(attached["id"])]
    assert "gateway_shadow_compared_total" not in (await gateway.call("GET", "/metrics"))[2].decode()


async def test_a_file_set_in_shadow_shows_would_be_grants_and_can_be_dropped(gateway: Gateway) -> None:
    world = await build_world(gateway)
    outsider = "user:" + world.ids["outsider"]
    files = ["# the next policy files", "", f"p, {outsider}, acme, /api/files/*, GET"]
    status, attached, _ = await world.call("superadmin", "POST", "/admin/shadow", {"name": "next", "files": files})
    assert status == 201, attached
    assert (attached["mode"], attached["add"]) == ("files", [f"p, {outsider}, acme, /api/files/*, GET, allow"])
    assert await _proxied(world, "outsider", "GET", "/api/files/a") == 403, "the live policy still denies"
    status, report = await _report(world)
    assert (report["would_deny"], report["would_allow"]) == (0, 1)
    assert report["differences"][0]["live_rule"] == "", "denied by default: no line"

    assert (await world.call("superadmin", "DELETE", "/admin/shadow"))[0] == 204
    assert (await _report(world))[0] == 404
    assert (await world.call("superadmin", "DELETE", "/admin/shadow"))[0] == 404
    assert await _proxied(world, "outsider", "GET", "/api/files/a") == 403
    bad = {"name": "x", "add": ["p, viewer, acme"]}
    status, problem, _ = await world.call("superadmin", "POST", "/admin/shadow", bad)
    assert (status, problem["detail"].startswith("add[0]")) == (422, True)
    both = {"name": "x", "add": ["p, viewer, acme, /x, GET"], "files": []}
    assert (await world.call("superadmin", "POST", "/admin/shadow", both))[0] == 422
    elevated = {"name": "x", "files": ["g, viewer, superadmin, *"]}
    status, problem, _ = await world.call("superadmin", "POST", "/admin/shadow", elevated)
    assert (status, "cannot inherit superadmin" in problem["detail"]) == (422, True), "a role never inherits it"
