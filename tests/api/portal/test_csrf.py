"""The portal's forms refuse cross-site posts and forged tokens (REQ-B11), and its return URLs are checked when
the page is shown and again when the form is posted (REQ-B1, REQ-B2)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.access.test_return_url import REFUSED
from tests.api.portal.helpers import browserish, portal_gateway
from tests.conftest import PASSWORD, Gateway, Upstream

EMAIL = "ann@example.test"
FORMS = {
    "/portal/sign-in": ("sign-in", {"email": EMAIL, "password": PASSWORD}),
    "/portal/sign-in/mfa": ("mfa", {"code": "123456"}),
    "/portal/forgot": ("forgot", {"email": EMAIL}),
    "/portal/reset": ("reset", {"token": "et_x", "password": "a new long one", "confirm": "a new long one"}),
    "/portal/sign-out": ("sign-out", {"next": ""}),
    "/portal/sessions/others/end": ("sessions", {}),
}
ATTACKS = {
    "no token": ({}, None),
    "empty token": ({}, ""),
    "wrong token": ({}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    "another form's token": ({}, "other-form"),
    "cross-site fetch": ({"Sec-Fetch-Site": "cross-site"}, "valid"),
    "same-site sibling": ({"Sec-Fetch-Site": "same-site"}, "valid"),
    "foreign origin": ({"Origin": "https://evil.example", "Sec-Fetch-Site": ""}, "valid"),
    "null origin": ({"Origin": "null", "Sec-Fetch-Site": ""}, "valid"),
    "foreign origin, same-origin claimed": ({"Origin": "https://evil.example"}, "valid"),
    "neither origin nor fetch metadata": ({"Origin": "", "Sec-Fetch-Site": ""}, "valid"),
}


@pytest.fixture
async def portal(db_url: str, upstream: Upstream, tmp_path: Path) -> Gateway:  # type: ignore[misc]
    async with portal_gateway(db_url, upstream, tmp_path, allowed_hosts=["app.example.test"]) as gateway:
        await gateway.user(EMAIL)
        yield gateway


@pytest.mark.parametrize("path", list(FORMS))
async def test_forged_and_cross_site_posts_are_refused(portal: Gateway, path: str) -> None:
    """REQ-B11: each portal form is refused (403, nothing done) without this browser's token for that form, or
    when the browser says the post came from another site (or says nothing at all), even with a valid token;
    a same-origin post with the token is accepted."""
    form, fields = FORMS[path]
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        signed = browser.cookies["gateway_session"]
        for name, (headers, token) in ATTACKS.items():
            sent = dict(fields)
            if token is not None:
                sent["csrf_token"] = {
                    "valid": browser.token(form),
                    "other-form": browser.token("sign-in" if form != "sign-in" else "forgot"),
                }.get(token, token)
            refused = await browser.post(path, sent, headers=headers)
            assert refused.status == 403, (name, refused.status, refused.text[:200])
            assert "Request refused" in refused.text, name
            assert browser.cookies.get("gateway_session") == signed, f"{name}: nothing changed"
        accepted = await browser.post(path, {**fields, "csrf_token": browser.token(form)}, headers={"Origin": "null"})
        assert accepted.status != 403, "what Chromium sends under no-referrer: Origin null, Sec-Fetch-Site same-origin"


async def test_a_token_from_another_browser_is_refused(portal: Gateway) -> None:
    """A token is bound to the browser's own CSRF cookie: one copied from another browser does not work."""
    async with browserish(portal) as attacker, browserish(portal) as victim:
        await attacker.get("/portal/sign-in")
        await victim.get("/portal/sign-in")
        stolen = attacker.token("sign-in")
        refused = await victim.post("/portal/sign-in", {"csrf_token": stolen, "email": EMAIL, "password": PASSWORD})
        assert refused.status == 403


async def test_open_redirects_are_refused_when_shown_and_when_posted(portal: Gateway) -> None:
    """REQ-B1, REQ-B2: for every payload of the return-URL table, a refused return URL never reaches the page's
    form, nor the Location after a sign-in posted with it directly, nor the redirect of a browser already
    signed in: each goes to the default."""
    for payload in REFUSED:
        if any(ord(ch) < 32 for ch in payload):
            continue  # a form field with a control character is dropped before any check (tested below)
        async with browserish(portal) as browser:
            shown = await browser.get("/portal/sign-in?rd=" + quote(payload, safe=""))
            assert shown.status == 200, payload
            assert 'name="rd" value="/portal/sessions"' in shown.text, payload
            posted = await browser.post(
                "/portal/sign-in",
                {"csrf_token": browser.token("sign-in"), "email": EMAIL, "password": PASSWORD, "rd": payload},
            )
            assert posted.status == 303, payload
            assert posted.location == "/portal/sessions", payload
            again = await browser.get("/portal/sign-in?rd=" + quote(payload, safe=""))
            assert again.status == 303 and again.location == "/portal/sessions", payload


async def test_control_characters_in_a_posted_return_url_fall_back(portal: Gateway) -> None:
    """REQ-B1: CR, LF and tab in a posted return URL never reach a header: the default is used."""
    async with browserish(portal) as browser:
        await browser.get("/portal/sign-in")
        for payload in ("/\t/evil.com", "/app\r\nSet-Cookie: x=1", "/\n/evil.com"):
            posted = await browser.post(
                "/portal/sign-in",
                {"csrf_token": browser.token("sign-in"), "email": EMAIL, "password": PASSWORD, "rd": payload},
            )
            assert posted.location == "/portal/sessions"
            assert not any("x=1" in cookie for cookie in posted.set_cookies())


@pytest.mark.parametrize(
    "target", ["/public/page?x=1", "https://app.example.test/dash?tab=2#top", "HTTP://app.example.test/x"]
)
async def test_an_allowed_return_url_is_the_location_exactly(portal: Gateway, target: str) -> None:
    """REQ-B1: an acceptable return URL comes back as the `Location`, byte for byte (the checked string is the
    one sent)."""
    async with browserish(portal) as browser:
        done = await browser.sign_in(EMAIL, PASSWORD, rd=target)
        assert done.status == 303
        assert done.location == target
