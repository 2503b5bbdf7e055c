"""The whole request path through real HTTP where the stored state plays a part, on each database: decisions
from stored roles and memberships, changes reaching a running gateway, no query in steady state, and the control
plane's answers. What a request goes through regardless of the database (match, headers, forwarding, CORS,
credentials, audit) runs once on the bare data plane: test_match.py, test_headers.py, test_forward.py..."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jwt
import pytest

from tests.conftest import (
    ROOT,
    Gateway,
    Upstream,
    gateway_settings,
    serving,
)
from tests.waiting import eventually

PROBLEM = "application/problem+json"


async def _acme(gateway: Gateway) -> dict[str, str]:
    """Users of each system role in acme, plus an outsider and a superadmin; returns email -> token."""
    await gateway.org("acme")
    await gateway.org("globex")
    for role in ("owner", "admin", "member", "viewer"):
        await gateway.user(f"{role}@acme.test", org="acme", role=role)
    await gateway.user("carol@globex.test", org="globex", role="owner")
    await gateway.user("root@platform.test", superadmin=True)
    emails = [f"{r}@acme.test" for r in ("owner", "admin", "member", "viewer")]
    emails += ["carol@globex.test", "root@platform.test"]
    return {email.split("@")[0]: await gateway.login(email) for email in emails}


ROLE_MATRIX = [
    # role, method, expected status
    ("viewer", "GET", 200),
    ("viewer", "HEAD", 200),
    ("viewer", "POST", 403),
    ("viewer", "DELETE", 403),
    ("member", "GET", 200),
    ("member", "POST", 200),
    ("member", "PUT", 200),
    ("member", "PATCH", 200),
    ("member", "DELETE", 403),
    ("admin", "DELETE", 200),
    ("admin", "POST", 200),
    ("owner", "DELETE", 200),
    ("owner", "GET", 200),
]


@pytest.mark.parametrize(("role", "method", "expected"), ROLE_MATRIX, ids=[f"{r}-{m}-{e}" for r, m, e in ROLE_MATRIX])
async def test_system_roles_allow_and_deny(gateway: Gateway, role: str, method: str, expected: int) -> None:
    """Each system role gets exactly the methods policies/system.csv grants it, in its own org."""
    tokens = await _acme(gateway)
    before = len(gateway.upstream.seen)
    status, headers, _ = await gateway.call(method, "/api/orders/7", token=tokens[role], org="acme")
    assert status == expected
    forwarded = len(gateway.upstream.seen) - before
    assert forwarded == (1 if expected == 200 else 0), "a denied request must never reach the upstream"
    if expected == 403:
        assert headers["Content-Type"].startswith(PROBLEM)


async def test_cross_org_is_denied(gateway: Gateway) -> None:
    """A member of acme has no rights in globex, and vice versa."""
    tokens = await _acme(gateway)
    status, _, body = await gateway.call("GET", "/api/x", token=tokens["owner"], org="globex")
    assert status == 403
    assert json.loads(body)["type"] == "urn:gateway:problem:forbidden"
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["carol"], org="acme")
    assert status == 403
    status, _, _ = await gateway.call("GET", "/api/x", token=tokens["carol"], org="globex")
    assert status == 200


async def test_superadmin_is_allowed_in_every_org(gateway: Gateway) -> None:
    """A `g, user, superadmin, *` line applies in every organization, for every method."""
    tokens = await _acme(gateway)
    for org in ("acme", "globex"):
        for method in ("GET", "DELETE", "POST"):
            status, _, _ = await gateway.call(method, "/api/anything/deep", token=tokens["root"], org=org)
            assert status == 200
    assert gateway.upstream.last.header("X-Gateway-Roles") == "superadmin"


async def test_unknown_gateway_paths_are_404_and_never_forwarded(gateway: Gateway) -> None:
    """Paths under the gateway's own prefixes that no endpoint serves are 404 problem+json from the control plane,
    never forwarded (proxied look-alikes: tests/proxy/test_match.py)."""
    tokens = await _acme(gateway)
    for path in ("/auth/nope", "/admin/x"):
        status, headers, _body = await gateway.call("GET", path, token=tokens["root"], org="acme")
        assert status == 404, path
        assert headers["Content-Type"].startswith(PROBLEM), path
    assert gateway.upstream.seen == []


async def test_membership_change_takes_effect_without_restart(gateway: Gateway) -> None:
    """Promoting a viewer to admin changes the next decision; the token stays the same."""
    tokens = await _acme(gateway)
    assert (await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme"))[0] == 403
    await gateway.member("acme", "viewer@acme.test", "admin")
    assert (await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme"))[0] == 200
    assert gateway.upstream.last.header("X-Gateway-Roles") == "admin"


async def test_steady_state_makes_no_database_query(gateway: Gateway) -> None:
    """Proxied requests are served from memory: the only statements are the background version poll."""
    from sqlalchemy import event

    tokens = await _acme(gateway)
    await gateway.call("GET", "/api/warm", token=tokens["viewer"], org="acme")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    engine = gateway.runtime.services.db.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for index in range(30):
            status, _, _ = await gateway.call("GET", f"/api/items/{index}", token=tokens["viewer"], org="acme")
            assert status == 200
            status, _, _ = await gateway.call("DELETE", f"/api/items/{index}", token=tokens["viewer"], org="acme")
            assert status == 403
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert all("state_version" in statement for statement in statements), statements


async def test_disabled_user_loses_every_grant(gateway: Gateway) -> None:
    """Disabling a user drops their memberships and global roles from the policy on the next reload."""
    from sqlalchemy import update

    from gateway.db.engine import bump_version
    from gateway.db.models import User

    tokens = await _acme(gateway)
    assert (await gateway.call("GET", "/api/x", token=tokens["root"], org="acme"))[0] == 200
    async with gateway.runtime.services.sessions() as session:
        await session.execute(
            update(User).where(User.email.in_(["root@platform.test", "viewer@acme.test"])).values(disabled=True)
        )
        await bump_version(session)
        await session.commit()
    await gateway.runtime.refresh()
    assert (await gateway.call("GET", "/api/x", token=tokens["root"], org="acme"))[0] == 403
    assert (await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme"))[0] == 403
    assert (await gateway.call("GET", "/api/x", token=tokens["member"], org="acme"))[0] == 200


async def test_changes_made_elsewhere_arrive_by_polling(gateway: Gateway) -> None:
    """A membership written by another process (no explicit refresh here) is enforced within a poll or two."""
    tokens = await _acme(gateway)
    assert (await gateway.call("DELETE", "/api/x", token=tokens["member"], org="acme"))[0] == 403
    from gateway.manage import members
    from gateway.manage.common import find_org
    from tests.conftest import CLI

    async with gateway.runtime.services.sessions() as session:  # as the CLI would: write, bump, commit; no refresh
        user = await members.find_user(session, email="member@acme.test")
        await members.change_role(session, CLI, await find_org(session, "acme"), user.id, "admin")
        await session.commit()

    async def allowed() -> bool:
        return (await gateway.call("DELETE", "/api/x", token=tokens["member"], org="acme"))[0] == 200

    await eventually(allowed, within=2.5, every=0.05, what="the change never reached the running gateway")


async def test_watched_files_reload_and_bad_edits_are_refused(
    db_url: str, upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With watch_files, edits to policies/ and model.conf apply without a restart; an edit with an error is
    refused and logged while traffic keeps flowing on the previous policy."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    policy_file = policy_dir / "system.csv"
    policy_file.write_text((ROOT / "policies" / "system.csv").read_text())
    model = tmp_path / "model.conf"
    model.write_text((ROOT / "model.conf").read_text())
    settings = gateway_settings(
        db_url,
        upstream.url,
        watch_files=True,
        policy_dir=str(policy_dir),
        model_path=str(model),
        audit_log="off",
        policy_poll_seconds=0.05,
    )
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("v@acme.test", org="acme", role="viewer")
        token = await gateway.login("v@acme.test")

        async def status(method: str) -> int:
            return (await gateway.call(method, "/api/x", token=token, org="acme"))[0]

        async def becomes(method: str, expected: int) -> None:
            async def answered() -> bool:
                return await status(method) == expected

            await eventually(answered, every=0.05, what=f"{method} never became {expected}")

        assert (await status("GET"), await status("DELETE")) == (200, 403)
        with policy_file.open("a") as handle:
            handle.write("p, viewer, acme, /api/x, DELETE\n")
        await becomes("DELETE", 200)
        loaded_at = gateway.runtime.state.loaded_at

        caplog.set_level(logging.ERROR, logger="gateway")
        with policy_file.open("a") as handle:  # a poisoned line: the whole edit is refused
            handle.write("p, viewer, acme, /a,b, GET\np, viewer, acme, /api/y, POST\n")
        await eventually(lambda: "policy files refused" in caplog.text, what="the poisoned edit was not refused")
        assert "system.csv:" in caplog.text
        # Traffic keeps flowing on the old policy meanwhile, through several more polls of the watcher.
        syncs = {gateway.runtime.last_sync}

        async def flowing_through_polls() -> bool:
            assert (await status("GET"), await status("DELETE")) == (200, 200)
            syncs.add(gateway.runtime.last_sync)
            return len(syncs) > 3

        await eventually(flowing_through_polls, what="the watcher stopped polling after the refused edit")
        assert gateway.runtime.state.loaded_at == loaded_at
        assert (await gateway.call("POST", "/api/y", token=token, org="acme"))[0] == 403

        caplog.clear()
        model.write_text("[request_definition]\nr = sub\n")  # a broken model is refused the same way
        await eventually(lambda: "casbin cannot load the model" in caplog.text, what="the broken model was not refused")
        assert await status("DELETE") == 200

        model.write_text((ROOT / "model.conf").read_text())
        policy_file.write_text((ROOT / "policies" / "system.csv").read_text())
        await becomes("DELETE", 403)  # the fixed files apply again


async def test_identity_token_verifies_with_the_jwks(gateway: Gateway) -> None:
    """A route with identity_token sends a short-lived JWT the upstream verifies with the public JWKS alone."""
    tokens = await _acme(gateway)
    status, _, _ = await gateway.call("GET", "/signed/x", token=tokens["member"], org="acme")
    assert status == 200
    identity = gateway.upstream.last.header("X-Gateway-Identity")
    assert identity is not None
    async with gateway.http.get(gateway.url + "/.well-known/jwks.json") as response:
        assert response.status == 200
        jwks = await response.json()
    assert all(set(key) == {"kty", "crv", "x", "kid", "alg", "use"} for key in jwks["keys"]), "no private part"
    header = jwt.get_unverified_header(identity)
    assert header["typ"] == "gw-identity+jwt"
    public = jwt.PyJWK({k: v for k, v in next(k for k in jwks["keys"] if k["kid"] == header["kid"]).items()})
    claims = jwt.decode(identity, public.key, algorithms=["EdDSA"], audience=gateway.upstream.url)
    assert claims["sub"] == gateway.upstream.last.header("X-Gateway-User")
    assert claims["org"] == "acme"
    assert claims["roles"] == ["member"]
    assert claims["exp"] - claims["iat"] == 60
    # the identity token is not an access token: the gateway refuses it as a bearer
    assert (await gateway.call("GET", "/api/x", token=identity, org="acme"))[0] == 401
    # routes without the option send none
    await gateway.call("GET", "/api/x", token=tokens["member"], org="acme")
    assert gateway.upstream.last.header("X-Gateway-Identity") is None


async def test_metrics_count_decisions_and_split_latency(gateway: Gateway) -> None:
    """/metrics counts proxied requests by route, status and decision and times gateway vs upstream."""
    tokens = await _acme(gateway)
    await gateway.call("GET", "/api/x", token=tokens["viewer"], org="acme")
    await gateway.call("DELETE", "/api/x", token=tokens["viewer"], org="acme")
    await gateway.call("GET", "/api/x", org="acme")
    await gateway.call("GET", "/public/x")
    async with gateway.http.get(gateway.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    for line in (
        'gateway_requests_total{decision="allowed",route="/api",status="200"} 1.0',
        'gateway_requests_total{decision="denied",route="/api",status="403"} 1.0',
        'gateway_requests_total{decision="refused",route="/api",status="401"} 1.0',
        'gateway_requests_total{decision="public",route="/public",status="200"} 1.0',
        'gateway_upstream_seconds_count{route="/api"} 1.0',
        'gateway_overhead_seconds_count{route="/api"} 3.0',
        'gateway_upstream_in_flight{route="/api"} 0.0',
        f"gateway_policy_version {float(gateway.runtime.state.version)}",
    ):
        assert line in text, line
    assert tokens["viewer"] not in text
