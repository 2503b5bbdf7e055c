"""API keys on proxied traffic: format and checksum, org from the key, scopes that only narrow, allow-lists of
client addresses, revocation, expiry, batched last-use times, and what they change in WebSockets, rate limits
and identity tokens."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict
from sqlalchemy import select, update

from gateway.access.credentials import REFUSED_FROM_ADDRESS
from gateway.asgi import create_gateway
from gateway.db.engine import bump_version
from gateway.db.models import ApiKey
from gateway.errors import InvalidToken, Unprocessable
from gateway.identity import apikeys
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving, start_gateway
from tests.waiting import eventually


async def _key(
    gateway: Gateway,
    *,
    role: str = "member",
    scopes: list[str] | None = None,
    expires_in_days: int | None = None,
    allowed_ips: list[str] | None = None,
) -> str:
    await gateway.org("acme")
    await gateway.org("globex")
    await gateway.user("ci@acme.test", org="acme", role=role)
    return await gateway.key(
        "acme", "ci@acme.test", scopes=scopes, expires_in_days=expires_in_days, allowed_ips=allowed_ips
    )


def test_key_format_and_checksum() -> None:
    """Keys are recognisable, carry a public id, and a one-character typo fails the checksum offline."""
    key, key_id = apikeys.new_key()
    assert key.startswith("gw_live_")
    assert len(key) == 70
    assert apikeys.parse(key) == key_id
    for index in (10, 30, len(key) - 1):
        typo = key[:index] + ("A" if key[index] != "A" else "B") + key[index + 1 :]
        with pytest.raises(InvalidToken):
            apikeys.parse(typo)


async def test_key_works_in_either_header_and_brings_its_org(gateway: Gateway) -> None:
    """X-API-Key or Bearer; no X-Org needed; another org named in the request is refused."""
    key = await _key(gateway)
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        status, _, _ = await gateway.call("POST", "/api/jobs", headers=headers)
        assert status == 200
        assert gateway.upstream.last.header("X-Gateway-Org") == "acme"
        assert gateway.upstream.last.header("X-API-Key") is None, "the key is consumed, not forwarded"
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": key, "X-Org": "globex"}))[0] == 403
    assert (await gateway.call("GET", "/orgs/globex/x", headers={"X-API-Key": key}))[0] == 403
    assert (await gateway.call("DELETE", "/api/x", headers={"X-API-Key": key}))[0] == 403, "roles still apply"


async def test_bad_revoked_and_expired_keys_are_401(gateway: Gateway) -> None:
    """A made-up, mistyped, revoked or expired key is 401; revocation applies on the next reload."""
    key = await _key(gateway)
    made_up, _ = apikeys.new_key()
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (made_up, typo, "gw_live_short"):
        assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": bad}))[0] == 401
    await gateway.revoke(key)
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401


async def test_expired_key_is_401(gateway: Gateway) -> None:
    """A key past its expiry is refused even before any reload."""
    key = await _key(gateway, expires_in_days=1)
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 200
    async with gateway.runtime.services.sessions() as session:
        await session.execute(update(ApiKey).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        await bump_version(session)
        await session.commit()
    await gateway.runtime.refresh()
    status, headers, _ = await gateway.call("GET", "/api/x", headers={"X-API-Key": key})
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_scopes_narrow_but_never_widen(gateway: Gateway) -> None:
    """A key scoped to GET /api/reports/* cannot POST elsewhere; a DELETE scope does not let a member DELETE."""
    key = await _key(gateway, scopes=["GET /api/reports/*", "DELETE /api/*"])
    assert (await gateway.call("GET", "/api/reports/1", headers={"X-API-Key": key}))[0] == 200
    assert (await gateway.call("GET", "/api/orders/1", headers={"X-API-Key": key}))[0] == 403
    assert (await gateway.call("POST", "/api/reports/1", headers={"X-API-Key": key}))[0] == 403
    assert (await gateway.call("DELETE", "/api/orders/1", headers={"X-API-Key": key}))[0] == 403


async def test_last_use_is_written_in_batches(gateway: Gateway) -> None:
    """Using a key writes nothing per request; the batch writer records the last use."""
    key = await _key(gateway)
    await gateway.call("GET", "/api/x", headers={"X-API-Key": key})
    async with gateway.runtime.services.sessions() as session:
        assert await session.scalar(select(ApiKey.last_used_at)) is None
    await gateway.runtime.flush_key_usage()
    async with gateway.runtime.services.sessions() as session:
        assert await session.scalar(select(ApiKey.last_used_at)) is not None


async def test_identity_token_names_the_key(gateway: Gateway) -> None:
    """X-Gateway-Identity carries key_id when the caller used an API key."""
    key = await _key(gateway)
    await gateway.call("GET", "/signed/x", headers={"X-API-Key": key})
    claims = jwt.decode(gateway.upstream.last.header("X-Gateway-Identity") or "", options={"verify_signature": False})
    assert claims["key_id"] == apikeys.parse(key)


async def test_revoking_a_key_closes_its_websocket(gateway: Gateway) -> None:
    """A live WebSocket opened with a key is closed with 1008 once the key is revoked."""
    key = await _key(gateway)
    url = gateway.url.replace("http://", "ws://") + "/api/ws"
    async with gateway.http.ws_connect(url, headers={"X-API-Key": key}) as socket:
        await socket.send_str("hi")
        assert (await socket.receive(timeout=5)).data == "echo:hi"
        await gateway.revoke(key)
        message = await socket.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert socket.close_code == 1008


async def test_key_creation_is_validated(gateway: Gateway) -> None:
    """Bad scopes, names and non-member owners are refused with the field named."""
    await _key(gateway)
    await gateway.user("outsider@x.test")
    cases = [
        ({"email": "ci@acme.test", "name": "x", "scopes": ["GET api"]}, r"scopes\[0\]"),
        ({"email": "ci@acme.test", "name": "", "scopes": []}, "name"),
        ({"email": "outsider@x.test", "name": "x", "scopes": []}, "not a member"),
    ]
    for kwargs, field in cases:
        with pytest.raises(Unprocessable, match=field):
            await gateway.key("acme", **kwargs)  # type: ignore[arg-type]


async def test_rotation_gives_a_new_secret_and_a_grace_period_to_the_old(gateway: Gateway) -> None:
    """One call: a new key with the same name, scopes and expiry; the old one works until the grace period ends
    (the hot path reads its new expiry), or stops at once with grace 0. Only its owner rotates it, signed in."""
    key = await _key(gateway, scopes=["GET /api/*"], expires_in_days=30)
    token = await gateway.login("ci@acme.test")
    key_id = apikeys.parse(key)
    path = f"/admin/orgs/acme/members/me/keys/{key_id}/rotate"
    status, _, body = await gateway.call("POST", path, token=token, json={"grace_seconds": 2})
    assert status == 201, body
    answer = json.loads(body)
    new = answer["key"]
    assert answer["details"]["name"] == "ci" and answer["details"]["scopes"] == ["GET /api/*"]
    assert answer["details"]["expires_at"] is not None, "the new key keeps the old one's expiry"
    assert answer["previous"]["expires_at"] < answer["details"]["expires_at"], "the old one ends after the grace"
    for credential in (key, new):
        assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": credential}))[0] == 200
    assert (await gateway.call("POST", "/api/x", headers={"X-API-Key": new}))[0] == 403, "same scopes"

    async def old_refused() -> bool:
        return (await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401

    await eventually(old_refused, within=6, what="the old secret stops after its grace period")
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": new}))[0] == 200

    # Rotating again with no grace: the previous secret stops at once; a revoked key cannot be rotated.
    new_id = apikeys.parse(new)
    again = f"/admin/orgs/acme/members/me/keys/{new_id}/rotate"
    status, _, body = await gateway.call("POST", again, token=token, json={"grace_seconds": 0})
    assert status == 201
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": new}))[0] == 401
    assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": json.loads(body)["key"]}))[0] == 200
    assert (await gateway.call("POST", again, token=token, json={}))[0] == 409
    # Not with a key, not someone else's, not beyond a week.
    third = json.loads(body)["key"]
    third_path = f"/admin/orgs/acme/members/me/keys/{apikeys.parse(third)}/rotate"
    assert (await gateway.call("POST", third_path, headers={"X-API-Key": third}, json={}))[0] == 403
    await gateway.user("other@acme.test", org="acme", role="admin")
    other = await gateway.login("other@acme.test")
    assert (await gateway.call("POST", third_path, token=other, json={}))[0] == 404
    assert (await gateway.call("POST", third_path, token=token, json={"grace_seconds": 604801}))[0] == 422


# -- allow-lists of client addresses ----------------------------------------------------------------------------


async def _refusal(gateway: Gateway, path: str, key: str, **headers: str) -> tuple[int, str, bytes]:
    """Status, challenge and body of a call with `key` (what an attacker could compare)."""
    status, answer, body = await gateway.call("GET", path, headers={"X-API-Key": key, **headers})
    return status, answer.get("WWW-Authenticate", ""), body


async def test_a_key_works_only_from_its_allowed_addresses(gateway: Gateway) -> None:
    """From an address on its list the key works; from anywhere else it is refused with exactly the answer a
    made-up key gets (proxied, /admin and /auth alike), and only the audit line says why. X-Forwarded-For from a
    peer that is not a trusted proxy changes nothing. An empty list: from anywhere."""
    here = await _key(gateway, allowed_ips=["10.0.0.0/8", "127.0.0.1"])
    elsewhere = await gateway.key("acme", "ci@acme.test", name="elsewhere", allowed_ips=["203.0.113.0/24", "::1"])
    anywhere = await gateway.key("acme", "ci@acme.test", name="anywhere", allowed_ips=[])
    made_up, _ = apikeys.new_key()
    for key in (here, anywhere):
        assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 200
    for path in ("/api/x", "/admin/orgs/acme/members", "/auth/me"):
        refused = await _refusal(gateway, path, elsewhere)
        assert refused[0] == 401, path
        assert refused == await _refusal(gateway, path, made_up), f"{path}: told apart from a made-up key"
    spoofed = await _refusal(gateway, "/api/x", elsewhere, **{"X-Forwarded-For": "203.0.113.9"})
    assert spoofed[0] == 401, "X-Forwarded-For from an untrusted peer is not believed"
    assert gateway.upstream.seen[-1].header("X-Gateway-User") is not None, "only the allowed key got through"
    assert len(gateway.upstream.seen) == 2

    events = [e for e in gateway.audit_events() if e["status"] == 401]
    by_address = [e for e in events if e["reason"] == REFUSED_FROM_ADDRESS]
    assert [(e["route"], e["client_ip"]) for e in by_address] == [
        ("/api", "127.0.0.1"),
        ("/admin", "127.0.0.1"),
        ("/api", "127.0.0.1"),
    ], "the proxied and admin refusals say why (the /auth refusal has no audit line, as before)"
    assert {e["reason"] for e in events} - {REFUSED_FROM_ADDRESS} == {"invalid-token"}


async def test_allow_lists_follow_trusted_proxies_and_changes_apply_at_once(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """Behind a trusted proxy the client is the right-most untrusted address of X-Forwarded-For (or Forwarded),
    IPv4 or IPv6 (an IPv4 address written as IPv6 counts as itself); a PATCH of the allow-list applies to the
    very next request, and an empty list accepts the key from anywhere."""
    await load_system_policy(db_url)
    settings = gateway_settings(db_url, upstream.url, trusted_proxies=["127.0.0.1"], audit_log=str(tmp_path / "a"))
    async with serving(settings, upstream) as gateway:
        key = await _key(gateway, allowed_ips=["203.0.113.0/24", "2001:db8::/32"])

        async def status(forwarded: dict[str, str]) -> int:
            return (await gateway.call("GET", "/api/x", headers={"X-API-Key": key, **forwarded}))[0]

        cases = {
            "the proxy itself": ({}, 401),
            "an allowed client": ({"X-Forwarded-For": "203.0.113.9"}, 200),
            "an allowed IPv6 client": ({"X-Forwarded-For": "2001:db8:5::1"}, 200),
            "an IPv6 client outside": ({"X-Forwarded-For": "2001:db9::1"}, 401),
            "IPv4 written as IPv6": ({"X-Forwarded-For": "::ffff:203.0.113.9"}, 200),
            "Forwarded, IPv6": ({"Forwarded": 'for="[2001:db8::7]:4711"'}, 200),
            "the client is right-most": ({"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}, 401),
            "what the client wrote is left of it": ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, 200),
            "not an address": ({"X-Forwarded-For": "unknown"}, 401),
        }
        assert {name: await status(sent) for name, (sent, _) in cases.items()} == {
            name: expected for name, (_, expected) in cases.items()
        }

        token = await gateway.login("ci@acme.test")
        path = f"/admin/orgs/acme/members/me/keys/{apikeys.parse(key)}"
        changed, _, _ = await gateway.call(
            "PATCH", path, token=token, json={"allowed_ips": ["198.51.100.0/24"]}, headers={"X-Forwarded-For": "::1"}
        )
        assert changed == 200
        assert await status({"X-Forwarded-For": "203.0.113.9"}) == 401, "the change applies to the next request"
        assert await status({"X-Forwarded-For": "198.51.100.1"}) == 200
        await gateway.call("PATCH", path, token=token, json={"allowed_ips": []})
        assert await status({}) == 200, "an empty list: from anywhere"


async def test_an_allow_list_over_a_real_ipv6_connection(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """A key allowed from an IPv6 network works over IPv6 from inside it and not over IPv4."""
    await load_system_policy(db_url)
    front = create_gateway(gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl")))
    six = socket.socket(socket.AF_INET6)
    six.bind(("::1", 0))
    url, server, task = await start_gateway(front, also=(six,))
    try:
        async with aiohttp.ClientSession() as http:
            gateway = Gateway(url=url, http=http, runtime=front.runtime, upstream=upstream, front=front, server=server)
            key = await _key(gateway, allowed_ips=["::/64"])
            over_six = f"http://[::1]:{six.getsockname()[1]}/api/x"
            async with http.get(over_six, headers=CIMultiDict({"X-API-Key": key})) as response:
                assert response.status == 200
            assert (await gateway.call("GET", "/api/x", headers={"X-API-Key": key}))[0] == 401
    finally:
        server.should_exit = True
        await task


async def test_a_websocket_closes_when_its_key_is_no_longer_allowed_from_there(gateway: Gateway) -> None:
    """A live WebSocket opened with a key is closed with 1008 once the key's allow-list leaves its address out."""
    key = await _key(gateway, allowed_ips=["127.0.0.0/8"])
    token = await gateway.login("ci@acme.test")
    url = gateway.url.replace("http://", "ws://") + "/api/ws"
    async with gateway.http.ws_connect(url, headers={"X-API-Key": key}) as socket_:
        await socket_.send_str("hi")
        assert (await socket_.receive(timeout=5)).data == "echo:hi"
        path = f"/admin/orgs/acme/members/me/keys/{apikeys.parse(key)}"
        assert (await gateway.call("PATCH", path, token=token, json={"allowed_ips": ["10.0.0.0/8"]}))[0] == 200
        message = await socket_.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert socket_.close_code == 1008


@pytest.mark.parametrize(
    ("host", "path", "status"),
    [
        pytest.param("acme.apps.example.com", "/x", 200, id="host-names-the-keys-org"),
        pytest.param("globex.apps.example.com", "/x", 403, id="host-names-another-org"),
        pytest.param("gw.test", "/t/orgs/acme/x", 200, id="path-names-the-keys-org"),
        pytest.param("gw.test", "/t/orgs/globex/x", 403, id="path-names-another-org"),
        pytest.param("globex.example.com", "/x", 403, id="route-org-is-another"),
    ],
)
async def test_a_keys_org_must_agree_with_the_host_path_or_route(
    db_url: str, upstream: Upstream, tmp_path: Path, host: str, path: str, status: int
) -> None:
    """An API key acts in its own org only: a host, path or route naming another org is refused (403), as an
    X-Org naming another one is."""
    await load_system_policy(db_url)
    routes = [
        {"prefix": "/", "upstream": upstream.url, "hosts": ["*.apps.example.com"], "org_from": "host"}
        | {"org_host": "{org}.apps.example.com"},
        {"prefix": "/t", "upstream": upstream.url, "org_from": "path", "org_path": "/orgs/{org}"},
        {"prefix": "/", "upstream": upstream.url, "hosts": ["globex.example.com"], "org_from": "default"}
        | {"org": "globex"},
    ]
    settings = gateway_settings(db_url, upstream.url, routes=routes, audit_log=str(tmp_path / "audit.jsonl"))
    async with serving(settings, upstream) as gateway:
        for slug in ("acme", "globex"):
            await gateway.org(slug)
        await gateway.user("ops@both.test", org="acme", role="viewer")
        await gateway.member("globex", "ops@both.test", "viewer")
        key = await gateway.key("acme", "ops@both.test")
        got, _, _ = await gateway.call("GET", path, headers={"X-API-Key": key, "Host": host})
        assert got == status
