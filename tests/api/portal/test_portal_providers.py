"""Provider buttons on the portal: a browser signs in through an outside provider and ends in the portal's own
session cookie, back at its return URL (checked again at the callback, REQ-B2); the JSON API flow is unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.api.portal.helpers import LOCAL_BROWSER
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving
from tests.identity.providers import OidcProvider, callback_target, oidc_provider

CLIENT_ID = "gateway-client"
LOGIN_COOKIE = "gateway_login"  # not __Host-: these tests speak plain HTTP (cookie_secure = false)


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    async with oidc_provider() as provider:
        yield provider


@pytest.fixture
async def portal(db_url: str, upstream: Upstream, tmp_path: Path, idp: OidcProvider) -> AsyncIterator[Gateway]:
    """The portal on, with one OpenID Connect provider that may create users."""
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "audit.jsonl"),
        browser=LOCAL_BROWSER,
        identity_providers=[
            {
                "name": "corp",
                "display_name": "Corp SSO",
                "issuer": idp.url,
                "client_id": CLIENT_ID,
                "client_secret": "corp-client-secret",
                "allow_signup": True,
            }
        ],
    )
    await load_system_policy(db_url)
    async with serving(settings, upstream) as gateway:
        yield gateway


async def _through_provider(
    gateway: Gateway, idp: OidcProvider, return_to: str, sub: str
) -> tuple[int, dict[str, str]]:
    status, answer, _ = await gateway.call(
        "GET", f"/auth/providers/corp/start?return_to={quote(return_to, safe='')}", allow_redirects=False
    )
    assert status == 302
    login = answer["set-cookie"].split(";", 1)[0]
    assert login.startswith(LOGIN_COOKIE + "=")
    await idp.set_user(sub, {"email": f"{sub}@corp.test", "email_verified": True})
    back = await idp.authorize(answer["location"], sub)
    status, answer, _ = await gateway.call(
        "GET", callback_target(back), headers={"cookie": login}, allow_redirects=False
    )
    return status, {"location": answer.get("location", ""), "set-cookie": ";".join(answer.getall("set-cookie", []))}


async def test_the_sign_in_page_offers_each_provider_with_the_return_url(portal: Gateway) -> None:
    """The sign-in page has a button (a plain link) per configured provider, carrying the page's return URL."""
    status, _, body = await portal.call("GET", "/portal/sign-in?rd=%2Fpublic%2Flanding")
    assert status == 200
    page = body.decode()
    assert 'href="/auth/providers/corp/start?return_to=/public/landing"' in page or (
        'href="/auth/providers/corp/start?return_to=%2Fpublic%2Flanding"' in page
    )
    assert "Sign in with Corp SSO" in page


async def test_a_provider_sign_in_from_the_portal_ends_in_the_session_cookie(
    portal: Gateway, idp: OidcProvider
) -> None:
    """Started with a return URL, the callback answers as the portal does: the session cookie of a new browser
    session, and a redirect to the return URL; the cookie then opens the portal's sessions page."""
    status, answer = await _through_provider(portal, idp, "/public/landing", "ann")
    assert status == 303, answer
    assert answer["location"] == "/public/landing"
    session = next(part for part in answer["set-cookie"].split(";") if part.strip().startswith("gateway_session="))
    status, _, body = await portal.call("GET", "/portal/sessions", headers={"cookie": session.strip()})
    assert status == 200 and "ann@corp.test" in body.decode()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/%2F%2Fevil"])
async def test_an_unsafe_return_url_is_replaced_at_the_callback(
    portal: Gateway, idp: OidcProvider, target: str
) -> None:
    """The return URL a start carried is checked again at the callback: an open redirect becomes the portal's
    home page (REQ-B1, REQ-B2)."""
    status, answer = await _through_provider(portal, idp, target, "bob")
    assert status == 303
    assert answer["location"] == "/portal/sessions"
