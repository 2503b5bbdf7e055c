"""Sessions: every login is one, listed with its client; logout, logout-all and revoking one stop its access
and refresh tokens at once, on /auth and on the proxied path; idle and absolute lifetimes end it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import select, update

from gateway.db.models import RefreshToken, Session
from tests.conftest import PASSWORD, Gateway, Upstream, gateway_settings, serving


async def _login(gateway: Gateway, email: str, agent: str = "test-agent/1") -> dict[str, Any]:
    status, _, body = await gateway.call(
        "POST", "/auth/login", json={"email": email, "password": PASSWORD}, headers={"User-Agent": agent}
    )
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def _me(gateway: Gateway, token: str) -> int:
    return (await gateway.call("GET", "/auth/me", token=token))[0]


async def _refresh(gateway: Gateway, refresh_token: str) -> int:
    return (await gateway.call("POST", "/auth/refresh", json={"refresh_token": refresh_token}))[0]


async def test_sessions_are_listed_with_their_client(gateway: Gateway) -> None:
    """Two logins are two sessions, newest first, with IP and user agent; `current` marks the caller's."""
    await gateway.user("ann@example.test")
    first = await _login(gateway, "ann@example.test", "laptop/1")
    second = await _login(gateway, "ann@example.test", "phone/2")
    status, headers, body = await gateway.call("GET", "/auth/sessions", token=second["access_token"])
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    listed = json.loads(body)
    assert [s["user_agent"] for s in listed] == ["phone/2", "laptop/1"]
    assert [s["current"] for s in listed] == [True, False]
    assert {s["ip"] for s in listed} == {"127.0.0.1"}
    claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    assert claims["sid"] == listed[1]["id"]


async def test_logout_stops_this_session_at_once(gateway: Gateway) -> None:
    """After logout the same access token is 401 on /auth/me and on the proxy; its refresh token is 401;
    another session of the same user keeps working."""
    await gateway.org("acme")
    await gateway.user("ann@example.test", org="acme", role="viewer")
    one = await _login(gateway, "ann@example.test")
    two = await _login(gateway, "ann@example.test")
    assert (await gateway.call("GET", "/api/x", token=one["access_token"], org="acme"))[0] == 200
    status, _, body = await gateway.call("POST", "/auth/logout", token=one["access_token"])
    assert status == 200
    assert json.loads(body) == {"sessions_ended": 1}
    assert await _me(gateway, one["access_token"]) == 401
    assert (await gateway.call("GET", "/api/x", token=one["access_token"], org="acme"))[0] == 401
    assert await _refresh(gateway, one["refresh_token"]) == 401
    assert await _me(gateway, two["access_token"]) == 200


async def test_revoking_another_session_and_logging_out_everywhere(gateway: Gateway) -> None:
    """From session A, revoke B (B's tokens stop); someone else's session id is 404; logout-all ends all."""
    await gateway.user("ann@example.test")
    await gateway.user("bob@example.test")
    a = await _login(gateway, "ann@example.test")
    b = await _login(gateway, "ann@example.test")
    c = await _login(gateway, "ann@example.test")
    bob = await _login(gateway, "bob@example.test")
    b_sid = jwt.decode(b["access_token"], options={"verify_signature": False})["sid"]
    bob_sid = jwt.decode(bob["access_token"], options={"verify_signature": False})["sid"]
    assert (await gateway.call("DELETE", f"/auth/sessions/{bob_sid}", token=a["access_token"]))[0] == 404
    assert await _me(gateway, bob["access_token"]) == 200
    assert (await gateway.call("DELETE", f"/auth/sessions/{b_sid}", token=a["access_token"]))[0] == 204
    assert await _me(gateway, b["access_token"]) == 401
    assert await _refresh(gateway, b["refresh_token"]) == 401
    status, _, body = await gateway.call("POST", "/auth/logout-all", token=a["access_token"])
    assert status == 200
    assert json.loads(body) == {"sessions_ended": 2}
    for session in (a, c):
        assert await _me(gateway, session["access_token"]) == 401
        assert await _refresh(gateway, session["refresh_token"]) == 401
    assert await _me(gateway, bob["access_token"]) == 200


async def test_refresh_keeps_the_session_and_never_extends_it(gateway: Gateway) -> None:
    """A refreshed access token names the same session; the new refresh token expires with the session; once
    the session's absolute end passes, refresh is 401."""
    await gateway.user("ann@example.test")
    login = await _login(gateway, "ann@example.test")
    status, _, body = await gateway.call("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert status == 200
    rotated = json.loads(body)
    sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
    assert jwt.decode(rotated["access_token"], options={"verify_signature": False})["sid"] == sid
    async with gateway.runtime.services.sessions() as db:
        session = await db.get(Session, sid)
        assert session is not None
        expiries = set(await db.scalars(select(RefreshToken.expires_at).where(RefreshToken.family_id == sid)))
        assert expiries == {session.expires_at}
        past = session.created_at
        await db.execute(update(Session).where(Session.id == sid).values(expires_at=past))
        await db.execute(update(RefreshToken).where(RefreshToken.family_id == sid).values(expires_at=past))
        await db.commit()
    assert await _refresh(gateway, rotated["refresh_token"]) == 401


async def test_an_idle_session_ends(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """A refresh token unused for longer than refresh_idle_seconds is refused."""
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), tokens={"refresh_idle_seconds": 1}
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        login = await _login(gateway, "ann@example.test")
        await asyncio.sleep(1.5)  # time itself is under test: longer than refresh_idle_seconds without a refresh
        assert await _refresh(gateway, login["refresh_token"]) == 401


async def test_tokens_without_a_session_and_api_keys_are_refused_on_auth(gateway: Gateway) -> None:
    """A correctly signed access token without `sid` is 401; an API key cannot manage an account."""
    await gateway.org("acme")
    user_id = await gateway.user("ann@example.test", org="acme", role="member")
    ring = gateway.runtime.services.tokens.ring
    settings = gateway.runtime.settings.tokens
    now = int(time.time())
    claims = {"iss": settings.issuer, "aud": settings.audience, "sub": user_id, "iat": now, "exp": now + 60, "jti": "j"}
    token = jwt.encode(
        claims, ring.private_keys[ring.active_kid], algorithm="EdDSA", headers={"kid": ring.active_kid, "typ": "at+jwt"}
    )
    assert await _me(gateway, token) == 401
    key = await gateway.key("acme", "ann@example.test")
    assert (await gateway.call("GET", "/auth/me", headers={"Authorization": f"Bearer {key}"}))[0] == 401
    assert (await gateway.call("GET", "/auth/sessions", headers={"X-API-Key": key}))[0] == 401
