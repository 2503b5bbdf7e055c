"""Finding members inside an org: by part of an email or name, by role, and addressing one by email."""

from __future__ import annotations

from tests.api.admin_helpers import build_world
from tests.conftest import Gateway


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
