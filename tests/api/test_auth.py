"""/auth: login, refresh rotation with reuse detection, /auth/me, and problem+json for bad input."""

from __future__ import annotations

import asyncio
import json

import jwt

from tests.conftest import PASSWORD, Gateway


async def _login(gateway: Gateway, email: str, password: str = PASSWORD) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    async with gateway.http.post(gateway.url + "/auth/login", json={"email": email, "password": password}) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_login_returns_tokens(gateway: Gateway) -> None:
    """A correct login returns a bearer access JWT with the required claims and a refresh token, no-store."""
    user_id = await gateway.user("ann@example.test")
    status, headers, body = await _login(gateway, "ANN@example.test ")
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("rt_")
    assert headers["Cache-Control"] == "no-store"
    assert headers["Pragma"] == "no-cache"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "exp", "iat", "jti"} <= claims.keys()
    assert claims["sub"] == user_id
    assert claims["exp"] - claims["iat"] == 900


async def test_login_failures_are_indistinguishable(gateway: Gateway) -> None:
    """Unknown email, wrong password and a disabled account get the same status and body."""
    await gateway.user("ann@example.test")
    await gateway.user("off@example.test")
    async with gateway.runtime.services.sessions() as session:
        from sqlalchemy import update

        from gateway.db.models import User

        await session.execute(update(User).where(User.email == "off@example.test").values(disabled=True))
        await session.commit()
    answers = [
        await _login(gateway, "nobody@example.test"),
        await _login(gateway, "ann@example.test", "wrong password!"),
        await _login(gateway, "off@example.test"),
        await _login(gateway, "not-an-email", "x"),
    ]
    assert {a[0] for a in answers} == {401}
    assert len({json.dumps(a[2], sort_keys=True) for a in answers}) == 1
    assert answers[0][2]["type"] == "urn:gateway:problem:login-failed"


async def test_refresh_rotates_and_reuse_revokes_the_family(gateway: Gateway) -> None:
    """Each refresh returns a new pair; presenting a spent token kills the newest one too."""
    await gateway.user("ann@example.test")
    _, _, first = await _login(gateway, "ann@example.test")

    async def refresh(token: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        async with gateway.http.post(gateway.url + "/auth/refresh", json={"refresh_token": token}) as r:
            return r.status, await r.json(content_type=None)

    status, second = await refresh(first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert (await refresh(first["refresh_token"]))[0] == 401  # reuse detected
    assert (await refresh(second["refresh_token"]))[0] == 401  # the whole family is revoked
    assert (await refresh("rt_made_up"))[0] == 401


async def test_concurrent_refresh_succeeds_once(gateway: Gateway) -> None:
    """Ten parallel uses of one refresh token: exactly one wins."""
    await gateway.user("ann@example.test")
    _, _, pair = await _login(gateway, "ann@example.test")

    async def refresh() -> int:
        async with gateway.http.post(gateway.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]}) as r:
            return r.status

    statuses = await asyncio.gather(*(refresh() for _ in range(10)))
    assert statuses.count(200) == 1


async def test_me_lists_memberships(gateway: Gateway) -> None:
    """/auth/me shows the user, their orgs and roles; without a token it is 401 with a Bearer challenge."""
    await gateway.org("acme")
    await gateway.user("ann@example.test", org="acme", role="admin")
    token = await gateway.login("ann@example.test")
    async with gateway.http.get(gateway.url + "/auth/me", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        me = await r.json()
    assert me["email"] == "ann@example.test"
    assert me["memberships"] == [{"org": "acme", "name": "Acme", "role": "admin"}]
    async with gateway.http.get(gateway.url + "/auth/me") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.headers["Content-Type"].startswith("application/problem+json")


async def test_bad_input_is_a_problem_document_not_a_500(gateway: Gateway) -> None:
    """Malformed JSON is 400; wrong types, missing and unknown fields are 422 naming the field; problem+json."""
    for raw, status, field in (
        (b"{", 400, None),
        (b'{"email": 1, "password": "x"}', 422, "email"),
        (b'{"email": "a@b.c"}', 422, "password"),
        (b"[]", 400, None),
        (b'{"email": "a@b.c", "password": "x", "role": "admin"}', 422, "role"),
    ):
        async with gateway.http.post(
            gateway.url + "/auth/login", data=raw, headers={"content-type": "application/json"}
        ) as r:
            body = await r.json(content_type=None)
            assert r.status == status, (raw, body)
            assert r.headers["Content-Type"].startswith("application/problem+json")
            assert body["status"] == status
            assert body.get("field") == field, (raw, body)


async def test_health_and_readiness(gateway: Gateway) -> None:
    """/healthz answers; /readyz reports the loaded policy version without authentication."""
    async with gateway.http.get(gateway.url + "/healthz") as r:
        assert r.status == 200
    async with gateway.http.get(gateway.url + "/readyz") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "ready"
    assert body["policy_version"] == gateway.runtime.state.version
    assert body["policy_rules"] > 0
