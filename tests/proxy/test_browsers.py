"""Browsers on proxied routes: the session cookie as a credential, cross-site checks, sliding expiry, sign-in
redirects, WebSockets and the configurable identity headers (REQ-B5, B6, B8, B11)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import pytest
from sqlalchemy import update

from gateway.db.models import Session, User
from gateway.settings import ConfigError, settings_from_mapping
from tests.browsers import ALLOWED_ORIGIN, COOKIE, PORTAL, Minted, browser_settings, sign_in
from tests.conftest import PASSWORD, Gateway, Upstream, load_system_policy, serving

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
async def browsing(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway with `[browser]` on; acme has a member (m@) and a viewer (v@)."""
    await load_system_policy(db_url)
    settings = browser_settings(db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"))
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("m@acme.test", org="acme", role="member")
        await gateway.user("v@acme.test", org="acme", role="viewer")
        yield gateway


def _attributes(set_cookie: str) -> tuple[str, set[str]]:
    head, *rest = [part.strip() for part in set_cookie.split(";")]
    return head, set(rest)


async def test_the_cookie_is_a_credential_only_where_the_route_accepts_it(browsing: Gateway) -> None:
    """A cookie route admits the session cookie and the upstream gets the identity and the other cookies, never
    the gateway's; a route of tokens and keys treats the same cookie as no credential (401, no redirect)."""
    minted = await sign_in(browsing, "m@acme.test")
    status, _, _ = await browsing.call("GET", "/app/acme/page", headers=minted.header)
    assert status == 200
    seen = browsing.upstream.last
    assert seen.header("X-Gateway-User") == minted.user_id
    assert seen.header("X-Gateway-Org") == "acme"
    assert seen.header("Cookie") == "theme=dark; lang=en"
    status, headers, body = await browsing.call(
        "GET", "/api/page", org="acme", headers={**minted.header, "Accept": HTML}
    )
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(body)["detail"] == "this endpoint needs an access token or an API key"
    # An Authorization header wins over the cookie: a bad token is refused although the cookie is good.
    status, _, _ = await browsing.call("GET", "/app/acme/page", token="not-a-token", headers=minted.header)
    assert status == 401
    # A kind the route does not accept is missing: an API key on /app.
    key = await browsing.key("acme", "m@acme.test")
    status, _, _ = await browsing.call("GET", "/app/acme/page", headers={"X-API-Key": key})
    assert status == 401


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({}, 403),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": ALLOWED_ORIGIN, "Sec-Fetch-Site": "same-site"}, 200),
        ({"Origin": "SELF"}, 200),
        ({"Origin": "SELF", "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "none"}, 200),
    ],
    ids=[
        "cross-site-form-post",
        "foreign-origin",
        "cross-site-without-origin",
        "same-site-not-listed",
        "neither-header",
        "opaque-origin",
        "allowed-origin",
        "same-origin",
        "same-origin-both",
        "fetch-site-same-origin",
        "fetch-site-none",
    ],
)
async def test_cookie_authenticated_unsafe_methods_are_checked_for_cross_site_requests(
    browsing: Gateway, headers: dict[str, str], status: int
) -> None:
    """REQ-B11: a cookie POST from another site (by Origin or Sec-Fetch-Site), or with neither header, is 403
    and never reaches the upstream; the request's own origin and allowed_origins pass."""
    minted = await sign_in(browsing, "m@acme.test")
    sent = {k: browsing.url if v == "SELF" else v for k, v in headers.items()}
    got, _, body = await browsing.call("POST", "/app/acme/form", headers={**minted.header, **sent}, data=b"amount=1000")
    assert got == status, body
    if status == 403:
        assert json.loads(body)["type"].endswith("cross-site-request")
        assert browsing.upstream.seen == []
    else:
        assert browsing.upstream.last.method == "POST"


async def test_token_requests_are_not_checked_for_origin(browsing: Gateway) -> None:
    """A bearer token is no ambient credential: a POST without Origin, or from anywhere, is judged as before."""
    token = await browsing.login("m@acme.test")
    for headers in ({}, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}):
        status, _, _ = await browsing.call("POST", "/app/acme/form", token=token, headers=headers)
        assert status == 200


@pytest.mark.parametrize("how", ["revoked", "logout-all", "password-change", "disabled"])
async def test_an_ended_session_refuses_its_cookie_at_once(browsing: Gateway, how: str) -> None:
    """Revoking the session from the list, logout-all, a password change and disabling the account end the
    cookie's session: the very next request is refused (401, the cookie cleared), as access tokens are."""
    minted = await sign_in(browsing, "m@acme.test")
    assert (await browsing.call("GET", "/app/acme/page", headers=minted.header))[0] == 200
    token = await browsing.login("m@acme.test")
    if how == "revoked":
        status, _, _ = await browsing.call("DELETE", f"/auth/sessions/{minted.session_id}", token=token)
        assert status == 204
    elif how == "logout-all":
        assert (await browsing.call("POST", "/auth/logout-all", token=token))[0] == 200
    elif how == "password-change":
        change = {"current_password": PASSWORD, "new_password": "another good passphrase"}
        status, _, body = await browsing.call("POST", "/auth/change-password", token=token, json=change)
        assert status == 200, body
    else:
        admin = "root@acme.test"
        await browsing.user(admin, superadmin=True)
        root = await browsing.login(admin)
        status, _, body = await browsing.call("POST", f"/admin/users/{minted.user_id}/disable", token=root)
        assert status in (200, 204), body
    status, headers, _ = await browsing.call("GET", "/app/acme/page", headers=minted.header)
    assert status == 401
    head, flags = _attributes(headers["Set-Cookie"])
    assert head == f"{COOKIE}=" and "Max-Age=0" in flags


async def test_an_active_browser_gets_a_fresh_cookie_and_its_session_a_last_use(browsing: Gateway) -> None:
    """The idle lifetime slides: a cookie older than the refresh age comes back re-issued (REQ-B8 flags), a
    fresh one does not; each use is written to sessions.last_used_at in batches, not per request. The browser
    keeps the cookie until the session's end (its token expires sooner), so the portal can resume it."""
    fresh = await sign_in(browsing, "m@acme.test")
    status, headers, _ = await browsing.call("GET", "/app/acme/page", headers=fresh.header)
    assert status == 200 and "Set-Cookie" not in headers
    old = await sign_in(browsing, "m@acme.test", issued_ago=600)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    async with browsing.runtime.services.sessions() as db:
        await db.execute(update(Session).where(Session.id == old.session_id).values(last_used_at=past))
        await db.commit()
    status, headers, _ = await browsing.call("GET", "/app/acme/page", headers=old.header)
    assert status == 200
    head, flags = _attributes(headers["Set-Cookie"])
    name, value = head.split("=", 1)
    assert name == COOKIE and value != old.value
    assert {"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} <= flags
    assert not any(flag.startswith("Domain") for flag in flags)
    async with browsing.runtime.services.sessions() as db:
        row = await db.get(Session, old.session_id)
        assert row is not None
        remaining = row.expires_at.timestamp() - time.time()
    assert remaining - 10 <= int(next(f for f in flags if f.startswith("Max-Age="))[8:]) <= remaining + 1
    renewed = Minted(value, old.session_id, old.user_id)
    status, headers, _ = await browsing.call("GET", "/app/acme/page", headers=renewed.header)
    assert status == 200 and "Set-Cookie" not in headers
    await browsing.runtime.flush_session_usage()
    async with browsing.runtime.services.sessions() as db:
        row = await db.get(Session, old.session_id)
        assert row is not None
        assert row.last_used_at > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)


@pytest.mark.parametrize(
    ("method", "path", "headers", "cookie", "expected"),
    [
        ("GET", "/app/acme/page?tab=1", {"Accept": HTML}, None, 302),
        ("HEAD", "/app/acme/page?tab=1", {"Accept": HTML}, None, 302),
        ("GET", "/app/acme/page?tab=1", {"Accept": HTML, "Sec-Fetch-Mode": "navigate"}, "bad", 302),
        ("GET", "/app/acme/page?tab=1", {"Accept": HTML, "X-Requested-With": "XMLHttpRequest"}, None, 401),
        ("GET", "/app/acme/page?tab=1", {"Accept": HTML, "Sec-Fetch-Mode": "cors"}, None, 401),
        ("GET", "/app/acme/page?tab=1", {"Accept": "application/json"}, None, 401),
        ("GET", "/app/acme/page?tab=1", {}, "bad", 401),
        ("POST", "/app/acme/page?tab=1", {"Accept": HTML}, None, 401),
        ("GET", "/api/page", {"Accept": HTML, "X-Org": "acme"}, None, 401),
    ],
    ids=[
        "navigation",
        "head",
        "bad-cookie-navigation",
        "xhr",
        "fetch-cors",
        "json",
        "bad-cookie-api",
        "post",
        "bearer-only-route",
    ],
)
async def test_unauthenticated_navigations_go_to_sign_in_and_the_rest_get_401(
    browsing: Gateway, method: str, path: str, headers: dict[str, str], cookie: str | None, expected: int
) -> None:
    """A GET/HEAD navigation without a valid credential on a cookie route is sent to the portal with the URL it
    asked for; scripts, non-HTML requests, other methods and token-only routes get the 401 problem with its
    challenge. A refused cookie is cleared either way."""
    sent = dict(headers)
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    status, answer, _ = await browsing.call(method, path, headers=sent, allow_redirects=False)
    assert status == expected
    if expected == 302:
        rd = quote(browsing.url + path, safe="")
        assert answer["Location"] == f"{PORTAL}/portal/sign-in?rd={rd}"
        assert answer["Cache-Control"] == "no-store"
    else:
        assert answer["WWW-Authenticate"].startswith("Bearer")
        assert answer["Content-Type"] == "application/problem+json"
    cleared = answer.get("Set-Cookie")
    if cookie is not None and path.startswith("/app"):
        assert cleared is not None and cleared.startswith(f"{COOKIE}=;") and "Max-Age=0" in cleared
    else:
        assert cleared is None
    assert browsing.upstream.seen == []


async def test_an_idle_expired_cookie_goes_to_sign_in_but_is_kept_for_the_portal(browsing: Gateway) -> None:
    """A genuine cookie whose token idled out is refused (401 / sign-in redirect) but not cleared: the browser
    keeps it until the session's end so the portal can resume a session still in use."""
    idle = browsing.runtime.settings.browser.idle_seconds
    expired = await sign_in(browsing, "m@acme.test", issued_ago=idle + 60)
    status, answer, _ = await browsing.call(
        "GET", "/app/acme/page", headers={**expired.header, "Accept": HTML}, allow_redirects=False
    )
    assert status == 302 and answer["Location"].startswith(f"{PORTAL}/portal/sign-in?rd=")
    assert "Set-Cookie" not in answer
    status, answer, _ = await browsing.call("GET", "/app/acme/page", headers=expired.header)
    assert status == 401 and "Set-Cookie" not in answer
    assert browsing.upstream.seen == []


async def test_the_return_url_believes_forwarded_headers_only_from_trusted_proxies(
    db_url: str, upstream: Upstream
) -> None:
    """REQ-B6: X-Forwarded-Host/-Proto from an untrusted peer change nothing in `rd`; from a trusted proxy they
    name the URL the browser asked for."""
    await load_system_policy(db_url)
    spoof = {"Accept": HTML, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    for trusted in ([], ["127.0.0.1"]):
        async with serving(browser_settings(db_url, upstream.url, trusted_proxies=trusted), upstream) as gateway:
            status, headers, _ = await gateway.call("GET", "/app/acme/x", headers=spoof, allow_redirects=False)
            assert status == 302
            rd = unquote(headers["Location"].split("rd=", 1)[1])
            assert rd == ("https://evil.example/app/acme/x" if trusted else gateway.url + "/app/acme/x")


def _ws(gateway: Gateway, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


@pytest.mark.parametrize(
    ("origin", "status"),
    [("SELF", 101), (ALLOWED_ORIGIN, 101), ("https://evil.example", 403), (None, 403)],
    ids=["same-origin", "allowed-origin", "foreign-origin", "no-origin"],
)
async def test_websockets_authenticate_with_the_cookie_from_allowed_origins(
    browsing: Gateway, origin: str | None, status: int
) -> None:
    """A browser's WebSocket opens with the session cookie only from its own or an allowed origin (Cross-Site
    WebSocket Hijacking); the upstream gets the identity and not the cookie."""
    minted = await sign_in(browsing, "v@acme.test")
    headers = dict(minted.header)
    if origin is not None:
        headers["Origin"] = browsing.url if origin == "SELF" else origin
    if status == 101:
        async with browsing.http.ws_connect(_ws(browsing, "/app/acme/ws"), headers=headers) as socket:
            await socket.send_str("hi")
            assert (await socket.receive(timeout=5)).data == "echo:hi"
        seen = browsing.upstream.last
        assert seen.header("X-Gateway-User") == minted.user_id
        assert seen.header("Cookie") == "theme=dark; lang=en"
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with browsing.http.ws_connect(_ws(browsing, "/app/acme/ws"), headers=headers):
            pass
    assert info.value.status == status
    assert browsing.upstream.seen == []


async def test_a_cookie_websocket_is_closed_when_its_session_is_revoked(browsing: Gateway) -> None:
    """Revoking the session that opened a WebSocket with its cookie closes it with 1008."""
    minted = await sign_in(browsing, "v@acme.test")
    headers = {**minted.header, "Origin": browsing.url}
    async with browsing.http.ws_connect(_ws(browsing, "/app/acme/ws"), headers=headers) as socket:
        await socket.send_str("before")
        assert (await socket.receive(timeout=5)).data == "echo:before"
        token = await browsing.login("v@acme.test")
        status, _, _ = await browsing.call("DELETE", f"/auth/sessions/{minted.session_id}", token=token)
        assert status == 204
        message = await socket.receive(timeout=5)
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1008, "no longer authorized")


async def test_a_websocket_cookie_is_no_credential_on_a_token_route(browsing: Gateway) -> None:
    """On a route of tokens and keys, a handshake with only the cookie is unauthenticated (401)."""
    minted = await sign_in(browsing, "v@acme.test")
    headers = {**minted.header, "Origin": browsing.url, "X-Org": "acme"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with browsing.http.ws_connect(_ws(browsing, "/api/ws"), headers=headers):
            pass
    assert info.value.status == 401


async def test_identity_headers_are_configurable_and_header_safe(browsing: Gateway) -> None:
    """A route's identity_headers choose what the upstream gets: email and name (percent-encoded UTF-8, so no
    CR/LF or non-ASCII byte reaches a header) and no roles; other routes keep the default three."""
    minted = await sign_in(browsing, "v@acme.test")
    name = "Zoë O'Brien\r\nX-Injected: 1 100%"
    async with browsing.runtime.services.sessions() as db:
        await db.execute(update(User).where(User.id == minted.user_id).values(name=name))
        await db.commit()
    status, _, _ = await browsing.call("GET", "/named/acme/me", headers=minted.header)
    assert status == 200
    seen = browsing.upstream.last
    assert seen.header("X-Gateway-User") == minted.user_id
    assert seen.header("X-Gateway-Email") == "v@acme.test"
    encoded = seen.header("X-Gateway-Name")
    assert encoded == "Zo%C3%AB%20O'Brien%0D%0AX-Injected:%201%20100%25"
    assert unquote(encoded) == name
    assert seen.header("X-Gateway-Org") == "acme"
    assert seen.header("X-Gateway-Roles") is None
    assert seen.header("X-Injected") is None
    status, _, _ = await browsing.call("GET", "/app/acme/me", headers=minted.header)
    assert status == 200
    names = browsing.upstream.last.names()
    assert {"x-gateway-user", "x-gateway-org", "x-gateway-roles"} <= names
    assert not names & {"x-gateway-email", "x-gateway-name"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"routes": [{"prefix": "/a", "upstream": "http://u", "auth": ["cookie"]}]}, "routes[0].auth"),
        ({"routes": [{"prefix": "/a", "upstream": "http://u", "auth": []}]}, "routes[0].auth"),
        ({"forward_auth": {"auth": ["cookie"]}}, "forward_auth.auth"),
        ({"forward_auth": {"identity_token": True}}, "forward_auth.audience"),
        ({"identity_headers": ["user", "phone"]}, "identity_headers"),
    ],
)
def test_browser_settings_are_checked(raw: dict[str, object], problem: str) -> None:
    """Cookie routes need `[browser] enabled`; a route accepts something; identity headers are known kinds."""
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        settings_from_mapping(raw)


def test_the_readme_browser_route_example_loads() -> None:
    """The README's browser-route configuration is valid as shown, and means what it says."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Browsers on proxied routes", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    settings = settings_from_mapping({"routes": [], **tomllib.loads(block.group(1))})
    (route,) = settings.routes
    assert route.auth == ("cookie", "bearer")
    assert settings.browser.enabled
