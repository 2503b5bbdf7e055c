"""The sign-in portal over real HTTP: pages, the session cookie, sign-in with and without a second factor,
sign-out, sessions, forgot and reset (REQ-B2, REQ-B3, REQ-B8, REQ-B9, REQ-B10)."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.db.models import OutboxMessage, Session
from gateway.identity import sessions
from tests.api.portal.helpers import Browserish, browserish, enrol_totp, next_code, portal_gateway
from tests.conftest import PASSWORD, Gateway, Upstream

EMAIL = "ann@example.test"


@pytest.fixture
async def portal(db_url: str, upstream: Upstream, tmp_path: Path) -> Gateway:  # type: ignore[misc]
    async with portal_gateway(
        db_url, upstream, tmp_path, post_logout_urls=["https://www.example.test/bye"], idle_seconds=600
    ) as gateway:
        await gateway.user(EMAIL)
        yield gateway


def _session_of(browser: Browserish) -> str:
    """The session id the browser's cookie names (its JWT's `sid`)."""
    import jwt

    claims = jwt.decode(browser.cookies["gateway_session"], options={"verify_signature": False})
    sid: str = claims["sid"]
    return sid


async def _revoked(gateway: Gateway, session_id: str) -> bool:
    async with gateway.runtime.services.sessions() as db:
        row = await db.get(Session, session_id)
        assert row is not None
        return row.revoked_at is not None


async def test_sign_in_sets_the_cookie_and_returns_to_the_return_url(portal: Gateway) -> None:
    """A password sign-in answers 303 to the return URL with a session cookie (HttpOnly, SameSite=Lax, Path=/,
    no Domain) naming a new session that lasts `browser.absolute_seconds`; the sessions page then knows the
    user, and the session is listed like a token login's."""
    async with browserish(portal) as browser:
        shown = await browser.get("/portal/sign-in?rd=/public/after")
        assert shown.status == 200
        assert 'name="rd" value="/public/after"' in shown.text
        assert '<html lang="en">' in shown.text and 'autocomplete="current-password"' in shown.text
        done = await browser.sign_in(EMAIL, PASSWORD, rd="/public/after")
        assert done.status == 303
        assert done.location == "/public/after"
        cookie = next(c for c in done.set_cookies() if c.startswith("gateway_session="))
        parts = [part.strip() for part in cookie.split(";")]
        assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(parts)
        assert not any(part.lower().startswith("domain") for part in parts)
        assert len(cookie) < 4096, "REQ-B10"
        max_age = int(next(part for part in parts if part.startswith("Max-Age="))[8:])
        assert 12 * 3600 - 60 <= max_age <= 12 * 3600
        page = await browser.get("/portal/sessions")
        assert page.status == 200
        assert EMAIL in page.text and "(this browser)" in page.text
        sid = _session_of(browser)
        async with portal.runtime.services.sessions() as db:
            listed = await sessions.active(db, (await db.get(Session, sid)).user_id, portal.runtime.settings.tokens)  # type: ignore[union-attr]
            assert sid in [row.id for row in listed]
            row = await db.get(Session, sid)
            assert row is not None
            assert abs((row.expires_at - row.created_at).total_seconds() - 12 * 3600) < 5


async def test_the_default_cookie_is_host_prefixed_and_secure(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """REQ-B8: with the default `[browser]` cookie settings the cookie is `__Host-gateway_session`, Secure,
    HttpOnly, SameSite=Lax, Path=/, without Domain; the CSRF cookie is `__Host-` and Secure too."""
    async with portal_gateway(
        db_url, upstream, tmp_path, cookie_name="__Host-gateway_session", cookie_secure=True
    ) as gateway:
        await gateway.user(EMAIL)
        async with browserish(gateway) as browser:
            shown = await browser.get("/portal/sign-in")
            csrf = next(c for c in shown.set_cookies() if c.startswith("__Host-gateway_csrf="))
            assert "Secure" in csrf and "HttpOnly" in csrf and "Domain" not in csrf and "Path=/" in csrf
            done = await browser.sign_in(EMAIL, PASSWORD)
            cookie = next(c for c in done.set_cookies() if c.startswith("__Host-gateway_session="))
            parts = {part.strip() for part in cookie.split(";")}
            assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= parts
            assert not any(part.lower().startswith("domain") for part in parts)


async def test_wrong_password_and_unknown_email_read_the_same(portal: Gateway) -> None:
    """No enumeration: a wrong password and an unknown address get the same status and the same message."""
    async with browserish(portal) as browser:
        wrong = await browser.sign_in(EMAIL, "not the password at all")
        unknown = await browser.sign_in("nobody@example.test", "not the password at all")
    assert wrong.status == unknown.status == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", wrong.text).replace(EMAIL, "X") == strip.sub("", unknown.text).replace(
        "nobody@example.test", "X"
    )
    assert "The email address or password is not right." in wrong.text
    assert "gateway_session" not in " ".join(wrong.set_cookies())


async def test_portal_sign_in_shares_the_login_throttle(portal: Gateway) -> None:
    """The portal goes through the JSON login's throttling: after the free failures the account is locked
    (429) in both, even for the right password."""
    async with browserish(portal) as browser:
        for _ in range(portal.runtime.settings.login.free_failures):
            await browser.sign_in(EMAIL, "wrong password here")
        locked = await browser.sign_in(EMAIL, PASSWORD)
    assert locked.status == 429
    assert "Too many attempts" in locked.text
    status, _, _ = await portal.call("POST", "/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert status == 429


async def test_every_sign_in_is_a_new_session_and_ends_the_old_one(portal: Gateway) -> None:
    """REQ-B9 (no fixation): signing in again in the same browser makes a new session id and revokes the
    session the old cookie named; a cookie value the gateway never issued is not adopted."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        first = _session_of(browser)
        old_cookie = browser.cookies["gateway_session"]
        await browser.sign_in(EMAIL, PASSWORD)
        second = _session_of(browser)
        assert first != second
        assert await _revoked(portal, first)
        assert not await _revoked(portal, second)
        browser.cookies["gateway_session"] = old_cookie
        refused = await browser.get("/portal/sessions")
        assert refused.status == 303 and refused.location is not None
        assert refused.location.startswith("/portal/sign-in")
        browser.cookies["gateway_session"] = "planted-by-someone-else"
        await browser.sign_in(EMAIL, PASSWORD)
        assert browser.cookies["gateway_session"] != "planted-by-someone-else"


async def test_a_revoked_session_cookie_is_refused_at_once(portal: Gateway) -> None:
    """A session ended elsewhere (logout-all with a token) stops its cookie on the very next portal request."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        assert (await browser.get("/portal/sessions")).status == 200
        token = await portal.login(EMAIL)
        status, _, _ = await portal.call("POST", "/auth/logout-all", token=token)
        assert status == 200
        after = await browser.get("/portal/sessions")
        assert after.status == 303
        assert after.location == "/portal/sign-in"


async def test_sign_in_with_a_second_factor(portal: Gateway) -> None:
    """With TOTP on, the password leads to the code step (the challenge in its own short-lived cookie, the
    return URL carried and checked again); a wrong code stays there, the right one signs in and returns."""
    secret, _ = await enrol_totp(portal, EMAIL)
    async with browserish(portal) as browser:
        first = await browser.sign_in(EMAIL, PASSWORD, rd="/public/x")
        assert first.status == 303
        assert first.location == "/portal/sign-in/mfa?rd=%2Fpublic%2Fx"
        assert "gateway_session" not in browser.cookies
        assert "gateway_mfa" in browser.cookies
        step = await browser.get(first.location)
        assert step.status == 200 and 'autocomplete="one-time-code"' in step.text
        wrong = await browser.post(
            "/portal/sign-in/mfa", {"csrf_token": step.csrf(), "code": "000000", "rd": "/public/x"}
        )
        assert wrong.status == 401 and "That code is not right" in wrong.text
        done = await browser.post(
            "/portal/sign-in/mfa", {"csrf_token": step.csrf(), "code": next_code(secret), "rd": "//evil.example"}
        )
        assert done.status == 303
        assert done.location == "/portal/sessions", "the return URL is checked again when posted"
        assert "gateway_session" in browser.cookies and "gateway_mfa" not in browser.cookies


async def test_sign_in_with_a_backup_code(portal: Gateway) -> None:
    """A backup code finishes the second step once; the user is told by email."""
    _, codes = await enrol_totp(portal, EMAIL)
    async with browserish(portal) as browser:
        first = await browser.sign_in(EMAIL, PASSWORD)
        assert first.location is not None
        step = await browser.get(first.location)
        done = await browser.post("/portal/sign-in/mfa", {"csrf_token": step.csrf(), "code": codes[0]})
        assert done.status == 303 and done.location == "/portal/sessions"
    async with portal.runtime.services.sessions() as db:
        subjects = list(await db.scalars(select(OutboxMessage.subject).where(OutboxMessage.recipient == EMAIL)))
    assert "A backup code was used" in subjects


async def test_sign_out_ends_the_session_and_clears_the_cookie(portal: Gateway) -> None:
    """Sign-out revokes the session and its response carries the clearing Set-Cookie; it then goes to the
    sign-in page, or to an exact `post_logout_urls` entry when asked (REQ-B3, REQ-B9)."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        sid = _session_of(browser)
        shown = await browser.get("/portal/sign-out")
        out = await browser.post("/portal/sign-out", {"csrf_token": shown.csrf(), "next": ""})
        assert out.status == 303 and out.location == "/portal/sign-in?signed_out=1"
        assert any(c.startswith("gateway_session=;") and "Max-Age=0" in c for c in out.set_cookies())
        assert await _revoked(portal, sid)
        assert "signed out" in (await browser.get(out.location)).text
        await browser.sign_in(EMAIL, PASSWORD)
        away = await browser.post(
            "/portal/sign-out", {"csrf_token": shown.csrf(), "next": "https://www.example.test/bye"}
        )
        assert away.location == "https://www.example.test/bye"
        for other in ("https://www.example.test/bye/", "https://evil.example/", "//www.example.test/bye", "/x"):
            await browser.sign_in(EMAIL, PASSWORD)
            refused = await browser.post("/portal/sign-out", {"csrf_token": shown.csrf(), "next": other})
            assert refused.location == "/portal/sign-in?signed_out=1", other


async def test_the_sessions_page_ends_one_or_all_others(portal: Gateway) -> None:
    """The sessions page lists token logins and browsers; a user ends one of them, or all but this browser,
    and cannot end another user's session."""
    await portal.user("bob@example.test")
    bob = await portal.login("bob@example.test")
    await portal.login(EMAIL)
    await portal.login(EMAIL)
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        page = await browser.get("/portal/sessions")
        ids = re.findall(r'action="/portal/sessions/([0-9a-f-]{36})/end"', page.text)
        assert len(ids) == 3
        mine = _session_of(browser)
        other = next(i for i in ids if i != mine)
        ended = await browser.post(f"/portal/sessions/{other}/end", {"csrf_token": page.csrf()})
        assert ended.status == 303 and ended.location == "/portal/sessions?ended=1"
        assert await _revoked(portal, other)
        async with portal.runtime.services.sessions() as db:
            bobs = await db.scalar(select(Session.id).where(Session.id != mine, Session.revoked_at.is_(None)).limit(1))
        status, _, _ = await portal.call("GET", "/auth/me", token=bob)
        assert status == 200
        rest = await browser.post("/portal/sessions/others/end", {"csrf_token": page.csrf()})
        assert rest.location == "/portal/sessions?ended=1"
        assert not await _revoked(portal, mine)
        assert bobs is not None
        foreign = await browser.post(f"/portal/sessions/{bobs}/end", {"csrf_token": page.csrf()})
        assert foreign.status == 303
        assert not await _revoked(portal, bobs), "another user's session is not this user's to end"
        mine_end = await browser.post(f"/portal/sessions/{mine}/end", {"csrf_token": page.csrf()})
        assert mine_end.location == "/portal/sign-in?signed_out=1"
        assert "gateway_session" not in browser.cookies


async def test_an_idle_cookie_of_a_live_session_is_reissued_on_the_way_back(portal: Gateway) -> None:
    """A cookie past its idle expiry whose session is live and was used within `idle_seconds` (as the data
    plane records) gets a fresh cookie on /portal/sign-in and goes straight back; once the session idled out
    too, the sign-in form is shown."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        sid = _session_of(browser)
        tokens = portal.runtime.services.tokens
        async with portal.runtime.services.sessions() as db:
            row = await db.get(Session, sid)
            assert row is not None
            stale, _ = tokens.issue_session_cookie(
                row.user_id, session_id=sid, auth_time=0, idle_seconds=-60, not_after=row.expires_at.timestamp()
            )
        browser.cookies["gateway_session"] = stale
        assert (await browser.get("/portal/sessions")).status == 303, "an idle cookie is not a signed-in one"
        back = await browser.get("/portal/sign-in?rd=/public/app")
        assert back.status == 303 and back.location == "/public/app"
        assert browser.cookies["gateway_session"] != stale
        assert _session_of(browser) == sid
        assert (await browser.get("/portal/sessions")).status == 200
        browser.cookies["gateway_session"] = stale
        async with portal.runtime.services.sessions() as db:
            long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=601)
            await db.execute(update(Session).where(Session.id == sid).values(last_used_at=long_ago))
            await db.commit()
        form = await browser.get("/portal/sign-in?rd=/public/app")
        assert form.status == 200 and 'name="password"' in form.text


async def test_forgot_and_reset_through_the_portal(portal: Gateway) -> None:
    """Forgot answers the same for known and unknown addresses; the email links to the portal's reset page,
    which sets the password, ends every session (this browser's too) and clears the cookie."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        sid = _session_of(browser)
        page = await browser.get("/portal/forgot")
        known = await browser.post("/portal/forgot", {"csrf_token": page.csrf(), "email": EMAIL})
        unknown = await browser.post("/portal/forgot", {"csrf_token": page.csrf(), "email": "nobody@example.test"})
        assert known.status == unknown.status == 200
        assert known.text == unknown.text
        await portal.settled()
        async with portal.runtime.services.sessions() as db:
            bodies = list(await db.scalars(select(OutboxMessage.body).where(OutboxMessage.recipient == EMAIL)))
        match = re.search(r"(/portal/reset\?token=\S+)", bodies[-1])
        assert match, bodies
        link = match.group(1)
        form = await browser.get(link)
        assert form.status == 200 and 'autocomplete="new-password"' in form.text
        token = link.split("token=", 1)[1]
        mismatch = await browser.post(
            "/portal/reset", {"csrf_token": form.csrf(), "token": token, "password": "a", "confirm": "b"}
        )
        assert mismatch.status == 422
        new = "purple elephant staircase"
        done = await browser.post(
            "/portal/reset", {"csrf_token": form.csrf(), "token": token, "password": new, "confirm": new}
        )
        assert done.status == 200 and "Password changed" in done.text
        assert await _revoked(portal, sid)
        assert "gateway_session" not in browser.cookies
        again = await browser.post(
            "/portal/reset", {"csrf_token": form.csrf(), "token": token, "password": new, "confirm": new}
        )
        assert again.status == 400
        assert (await browser.sign_in(EMAIL, new)).status == 303


@pytest.mark.parametrize("path", ["/portal/sign-in", "/portal/forgot", "/portal/reset?token=x", "/portal/sign-out"])
async def test_pages_carry_the_security_headers(portal: Gateway, path: str) -> None:
    """Every portal page forbids scripts and framing, sends no referrer and is never cached."""
    async with browserish(portal) as browser:
        page = await browser.get(path)
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"


async def test_the_portal_is_off_unless_enabled(gateway: Gateway) -> None:
    """Without `[browser] enabled` the portal's paths are 404 (and, being the gateway's own, never forwarded)."""
    status, _, _ = await gateway.call("GET", "/portal/sign-in")
    assert status == 404
    assert not gateway.upstream.seen


async def test_the_sign_in_page_is_quick_to_render(portal: Gateway) -> None:
    """The form is served without any password work (no Argon2 before a POST)."""
    started = time.perf_counter()
    async with browserish(portal) as browser:
        for _ in range(5):
            assert (await browser.get("/portal/sign-in")).status == 200
    assert time.perf_counter() - started < 5


async def test_a_password_change_elsewhere_ends_the_browser_session(portal: Gateway) -> None:
    """A password change with a token (in another session) ends the browser's session: its cookie is refused."""
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        token = await portal.login(EMAIL)
        change = {"current_password": PASSWORD, "new_password": "a fresh long passphrase"}
        status, _, _ = await portal.call("POST", "/auth/change-password", json=change, token=token)
        assert status == 200
        assert (await browser.get("/portal/sessions")).status == 303


async def test_portal_sign_ins_and_outs_are_in_the_audit_trail(portal: Gateway) -> None:
    """Signing in, replacing an older session and signing out through the portal are audit events of the user
    (never the password)."""
    from gateway.db.models import AuditRecord

    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        await browser.sign_in(EMAIL, PASSWORD)
        await browser.post("/portal/sign-out", {"csrf_token": browser.token("sign-out")})
    async with portal.runtime.services.sessions() as db:
        rows = list(await db.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    actions = [row.action for row in rows if row.action.startswith("session.")]
    assert actions == ["session.portal_sign_in", "session.replaced", "session.portal_sign_in", "session.logout"]
    assert all(PASSWORD not in row.detail for row in rows)


async def test_a_dead_code_step_starts_over_at_the_sign_in_form(portal: Gateway) -> None:
    """After five wrong codes the challenge is dead: the next code, even the right one, leads back to the
    password form (its cookie cleared), not into the account."""
    secret, _ = await enrol_totp(portal, EMAIL)
    async with browserish(portal) as browser:
        await browser.sign_in(EMAIL, PASSWORD)
        for _ in range(5):
            await browser.post("/portal/sign-in/mfa", {"csrf_token": browser.token("mfa"), "code": "000000"})
        late = await browser.post(
            "/portal/sign-in/mfa", {"csrf_token": browser.token("mfa"), "code": next_code(secret)}
        )
        assert late.status in (401, 429)
        assert "gateway_session" not in browser.cookies
        if late.status == 401:
            assert 'name="password"' in late.text and "gateway_mfa" not in browser.cookies


async def test_an_unverified_address_is_told_only_after_the_right_password(portal: Gateway) -> None:
    """An account whose address was never confirmed hears so only with the right password; a wrong one gets
    the usual message."""
    from gateway.db.models import User

    async with portal.runtime.services.sessions() as db:
        await db.execute(update(User).where(User.email == EMAIL).values(email_verified_at=None))
        await db.commit()
    async with browserish(portal) as browser:
        wrong = await browser.sign_in(EMAIL, "not the password at all")
        assert wrong.status == 401 and "Confirm your email" not in wrong.text
        right = await browser.sign_in(EMAIL, PASSWORD)
        assert right.status == 403 and "Confirm your email address first" in right.text
        assert "gateway_session" not in browser.cookies
