"""WebSockets: authorized like a GET before the handshake, then closed when authorization is withdrawn."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import delete

from gateway.db.engine import bump_version
from gateway.db.models import Membership
from tests.conftest import Gateway, Upstream, bare_serving, gateway_settings, load_system_policy, serving


async def _seed(gateway: Gateway) -> str:
    await gateway.org("acme")
    await gateway.org("globex")
    await gateway.user("v@acme.test", org="acme", role="viewer")
    return await gateway.login("v@acme.test")


def _ws_url(gateway: Gateway, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


async def test_websocket_is_proxied_after_authorization(gateway: Gateway) -> None:
    """An allowed caller's messages pass both ways; the upstream sees the identity, not the token."""
    token = await _seed(gateway)
    headers = {"Authorization": f"Bearer {token}", "X-Org": "acme", "X-Gateway-User": "spoof"}
    async with gateway.http.ws_connect(_ws_url(gateway, "/api/ws?room=1"), headers=headers) as socket:
        await socket.send_str("hello")
        assert (await socket.receive(timeout=5)).data == "echo:hello"
        await socket.send_bytes(b"\x00\x01")
        assert (await socket.receive(timeout=5)).data == b"echo:\x00\x01"
    seen = gateway.upstream.last
    assert seen.method == "WEBSOCKET"
    assert seen.raw_path == "/api/ws?room=1"
    assert seen.header("X-Gateway-Org") == "acme"
    assert seen.header("X-Gateway-User") != "spoof"
    assert seen.header("Authorization") is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nonsense", "X-Org": "acme"}, 401),
        ({"X-Org": "globex"}, 403),
    ],
)
async def test_refused_handshakes_get_http_errors(gateway: Gateway, headers: dict[str, str], status: int) -> None:
    """No token, a bad token or a foreign org is refused before any upgrade, as plain HTTP."""
    token = await _seed(gateway)
    if headers.get("X-Org") == "globex":
        headers = {**headers, "Authorization": f"Bearer {token}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with gateway.http.ws_connect(_ws_url(gateway, "/api/ws"), headers=headers):
            pass
    assert info.value.status == status
    assert gateway.upstream.seen == []


async def test_open_connection_is_closed_when_membership_is_removed(gateway: Gateway) -> None:
    """Removing the caller's membership closes the live connection with 1008 within a few seconds."""
    token = await _seed(gateway)
    headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
    async with gateway.http.ws_connect(_ws_url(gateway, "/api/ws"), headers=headers) as socket:
        await socket.send_str("before")
        assert (await socket.receive(timeout=5)).data == "echo:before"
        async with gateway.runtime.services.sessions() as session:
            await session.execute(delete(Membership))
            await bump_version(session)
            await session.commit()
        await gateway.runtime.refresh()
        message = await socket.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (1008, "no longer authorized")


async def test_open_connection_is_closed_when_its_session_ends(gateway: Gateway) -> None:
    """Logging out the session whose token opened the connection closes it with 1008 and a reason."""
    token = await _seed(gateway)
    headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
    async with gateway.http.ws_connect(_ws_url(gateway, "/api/ws"), headers=headers) as socket:
        await socket.send_str("before")
        assert (await socket.receive(timeout=5)).data == "echo:before"
        status, _, _ = await gateway.call("POST", "/auth/logout", token=token)
        assert status == 200
        message = await socket.receive(timeout=5)
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1008, "no longer authorized")


async def test_open_connection_is_closed_when_its_token_expires(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """A connection never outlives the access token that opened it: at its expiry, 1008 with a reason."""
    await load_system_policy(db_url)
    settings = gateway_settings(db_url, upstream.url, audit_log="off", tokens={"access_ttl_seconds": 2})
    async with serving(settings, upstream) as short:
        token = await _seed(short)
        headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
        async with short.http.ws_connect(_ws_url(short, "/api/ws"), headers=headers) as socket:
            await socket.send_str("before")
            assert (await socket.receive(timeout=5)).data == "echo:before"
            message = await socket.receive(timeout=6)
            assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1008, "credential expired")


async def test_a_websocket_on_a_host_route_takes_its_org_from_the_host(upstream: Upstream, tmp_path: Path) -> None:
    """A handshake is matched by host like any request: the org is the host's label, and an X-Org naming
    another org is refused before the upgrade."""
    route = {
        "prefix": "/",
        "upstream": upstream.url,
        "hosts": ["*.apps.example.com"],
        "org_from": "host",
        "org_host": "{org}.apps.example.com",
    }
    async with bare_serving(upstream, tmp_path, routes=[route]) as gateway:
        headers = {"Authorization": f"Bearer {gateway.tokens['viewer']}", "Host": "acme.apps.example.com"}
        async with gateway.http.ws_connect(_ws_url(gateway, "/ws"), headers=headers) as socket:
            await socket.send_str("hi")
            assert (await socket.receive(timeout=5)).data == "echo:hi"
        assert upstream.last.header("X-Gateway-Org") == "acme"
        for extra in ({"X-Org": "globex"}, {"Host": "globex.apps.example.com"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with gateway.http.ws_connect(_ws_url(gateway, "/ws"), headers={**headers, **extra}):
                    pass
            assert info.value.status == 403, extra
