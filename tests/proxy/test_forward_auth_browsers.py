"""Forward-auth for browsers: the session cookie, sign-in redirects (302/303, nginx's 401 with Location, 401 for
scripts), the re-issued cookie and the identity answer, directly and through the README's real nginx and Caddy
(REQ-B5, B6, B11)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict

from tests.browsers import COOKIE, PORTAL, browser_settings, sign_in
from tests.conftest import Gateway, Upstream, closed_port, load_system_policy, serving
from tests.proxy.test_forward_auth import _caddy, _nginx
from tests.waiting import eventually

HTML = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
ORIGINAL = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}
RD = quote("https://app.example.com/reports/1?x=1", safe="")


@pytest.fixture
async def fronted(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway trusting 127.0.0.1 as its proxy, answering browsers at /authz/forward; acme has a member."""
    await load_system_policy(db_url)
    settings = browser_settings(
        db_url,
        upstream.url,
        trusted_proxies=["127.0.0.1"],
        audit_log=str(tmp_path / "audit.jsonl"),
        forward_auth={
            "auth": ["bearer", "api_key", "cookie"],
            "identity_headers": ["user", "email", "org", "roles"],
            "identity_token": True,
            "audience": "https://app.example.com",
        },
    )
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("m@acme.test", org="acme", role="member")
        yield gateway


async def _ask(
    gateway: Gateway, method: str, headers: dict[str, str], *, query: str = "", uri: str = "/reports/1?x=1"
) -> tuple[int, CIMultiDict[str]]:
    sent = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "X-Org": "acme", **ORIGINAL, **headers}
    async with gateway.http.get(
        gateway.url + "/authz/forward" + query, headers=sent, allow_redirects=False
    ) as response:
        return response.status, response.headers.copy()


@pytest.mark.parametrize(
    ("method", "headers", "query", "status", "location"),
    [
        ("GET", {"Accept": HTML}, "", 302, True),
        ("HEAD", {"Accept": HTML}, "", 302, True),
        ("POST", {"Accept": HTML}, "", 303, True),
        ("GET", {"Accept": HTML, "X-Requested-With": "XMLHttpRequest"}, "", 401, False),
        ("GET", {"Accept": HTML, "Sec-Fetch-Mode": "cors"}, "", 401, False),
        ("GET", {"Accept": "application/json"}, "", 401, False),
        ("GET", {}, "", 401, False),
        ("GET", {"Accept": HTML}, "?mode=nginx", 401, True),
        ("POST", {"Accept": HTML}, "?mode=nginx", 401, True),
        ("GET", {"Accept": "application/json"}, "?mode=nginx", 401, False),
    ],
    ids=["get", "head", "post", "xhr", "fetch-cors", "json", "no-accept", "nginx", "nginx-post", "nginx-json"],
)
async def test_a_browser_without_a_session_is_sent_to_sign_in(
    fronted: Gateway, method: str, headers: dict[str, str], query: str, status: int, location: bool
) -> None:
    """REQ-B5: GET/HEAD -> 302, other methods -> 303, to the portal with the original URL as rd; scripts and
    non-HTML requests -> 401 with WWW-Authenticate; nginx mode -> 401 with Location, never 403."""
    got, answer = await _ask(fronted, method, headers, query=query)
    assert got == status
    if location:
        assert answer["Location"] == f"{PORTAL}/portal/sign-in?rd={RD}"
    else:
        assert "Location" not in answer
    if got == 401:
        assert answer["WWW-Authenticate"].startswith("Bearer")


async def test_the_return_url_comes_from_x_original_url_too(fronted: Gateway) -> None:
    """X-Original-URL (nginx's `$scheme://$http_host$request_uri`) names both the path judged and rd."""
    sent = {"X-Forwarded-Method": "GET", "X-Original-URL": "https://app.example.com/reports/1?x=1", "X-Org": "acme"}
    async with fronted.http.get(
        fronted.url + "/authz/forward", headers={**sent, "Accept": HTML}, allow_redirects=False
    ) as response:
        assert response.status == 302
        assert response.headers["Location"] == f"{PORTAL}/portal/sign-in?rd={RD}"


async def test_a_bad_cookie_is_cleared_on_the_way_to_sign_in(fronted: Gateway) -> None:
    """An expired or forged cookie is no session: the browser is redirected and the cookie cleared."""
    status, answer = await _ask(fronted, "GET", {"Accept": HTML, "Cookie": f"{COOKIE}=forged"})
    assert status == 302
    assert answer["Set-Cookie"].startswith(f"{COOKIE}=;") and "Max-Age=0" in answer["Set-Cookie"]


async def test_a_session_is_allowed_with_the_configured_identity_and_a_fresh_cookie(fronted: Gateway) -> None:
    """A valid cookie answers 200 with the configured identity headers and the signed identity JWT; an old
    cookie comes back re-issued in Set-Cookie, a fresh one does not."""
    minted = await sign_in(fronted, "m@acme.test", issued_ago=600)
    status, answer = await _ask(fronted, "GET", {"Cookie": f"{COOKIE}={minted.value}"})
    assert status == 200
    assert answer["X-Gateway-User"] == minted.user_id
    assert answer["X-Gateway-Email"] == "m@acme.test"
    assert (answer["X-Gateway-Org"], answer["X-Gateway-Roles"]) == ("acme", "member")
    identity = jwt.decode(answer["X-Gateway-Identity"], options={"verify_signature": False})
    assert (identity["sub"], identity["aud"]) == (minted.user_id, "https://app.example.com")
    fresh = answer["Set-Cookie"]
    assert fresh.startswith(f"{COOKIE}=") and "HttpOnly" in fresh and "Secure" in fresh
    again = fresh.split(";", 1)[0].split("=", 1)[1]
    status, answer = await _ask(fronted, "GET", {"Cookie": f"{COOKIE}={again}"})
    assert status == 200 and "Set-Cookie" not in answer


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
        ({}, 403),
        ({"Origin": "https://app.example.com"}, 200),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
    ],
    ids=["cross-site", "neither", "own-origin", "same-origin"],
)
async def test_cookie_posts_are_checked_against_the_original_origin(
    fronted: Gateway, headers: dict[str, str], status: int
) -> None:
    """REQ-B11 in forward-auth: the original request's origin (X-Forwarded-Proto and -Host) is its own."""
    minted = await sign_in(fronted, "m@acme.test")
    got, _ = await _ask(fronted, "POST", {"Cookie": f"{COOKIE}={minted.value}", **headers})
    assert got == status


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
async def test_the_readme_proxy_examples_serve_browsers(fronted: Gateway, tmp_path: Path, proxy: str) -> None:
    """The README's nginx and Caddy configurations, run for real with a browser: no session -> a redirect to the
    portal naming the page asked for; a script -> 401; with the session cookie the upstream gets the identity and
    the other cookies, never the gateway's; nginx passes a re-issued cookie on to the browser."""
    port = closed_port()
    build = _nginx if proxy == "nginx" else _caddy
    command = build(tmp_path, port, fronted.upstream.url, fronted.url)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"

        async def listening() -> bool:
            try:
                async with fronted.http.get(base + "/ping"):
                    return True
            except aiohttp.ClientConnectionError:
                assert process.returncode is None, f"{proxy} exited"
                return False

        await eventually(listening, within=10, every=0.05, what=f"{proxy} never listened")
        page = "/reports/7?tab=a%20b"
        rd = quote(base + page, safe="")
        browser = {"Accept": HTML, "X-Org": "acme"}
        async with fronted.http.get(base + page, headers=browser, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            assert response.headers["Location"] == f"{PORTAL}/portal/sign-in?rd={rd}"
        async with fronted.http.post(base + page, headers=browser, allow_redirects=False) as response:
            assert response.status == (302 if proxy == "nginx" else 303)
        script = {"Accept": "application/json", "X-Org": "acme"}
        async with fronted.http.get(base + page, headers=script, allow_redirects=False) as response:
            assert response.status == 401
            assert "Location" not in response.headers
        assert fronted.upstream.seen == []
        minted = await sign_in(fronted, "m@acme.test", issued_ago=600)
        cookies = {**browser, "Cookie": f"theme=dark; {COOKIE}={minted.value}; lang=en"}
        async with fronted.http.get(base + page, headers=cookies, allow_redirects=False) as response:
            assert response.status == 200, await response.text()
            refreshed = response.headers.get("Set-Cookie")
        seen = fronted.upstream.last
        assert seen.header("X-Gateway-User") == minted.user_id
        assert seen.header("X-Gateway-Org") == "acme"
        assert COOKIE not in (seen.header("Cookie") or "")
        assert "theme=dark" in (seen.header("Cookie") or "") and "lang=en" in (seen.header("Cookie") or "")
        if proxy == "nginx":
            assert refreshed is not None and refreshed.startswith(f"{COOKIE}=")
    finally:
        process.send_signal(signal.SIGQUIT if proxy == "nginx" else signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
