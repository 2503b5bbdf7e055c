"""The sign-in portal's pages: sign in (password, then the second factor), forgot and reset the password, sign
out, and the signed-in user's sessions. Server-rendered HTML forms; nothing needs JavaScript.

A sign-in through the portal is a session like a token login (identity/sessions.py): the same password check,
throttling, lockout and hashing bound (`accounts.first_factor`, `accounts.second_factor`), listed with the
others, ended by logout-all and password changes. It lasts `browser.absolute_seconds`; its cookie
(`browser.cookie_name`, a `gw-session+jwt`) expires after `browser.idle_seconds` unless re-issued. Every
sign-in makes a new session and revokes the one the browser's old cookie named (no fixation, REQ-B9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.cookies import clearing_header, issuing_header, read_cookie
from gateway.access.return_url import SIGN_IN_PATH, checked_return_url
from gateway.api.auth.account import send_reset
from gateway.api.auth.common import notify
from gateway.api.portal.guard import (
    CsrfRefused,
    Forms,
    check_post,
    clear_side_cookie,
    page,
    read_side_cookie,
    redirect,
    side_cookie,
)
from gateway.db.audit import write_event
from gateway.db.models import Session, User, utcnow
from gateway.errors import BadRequest, GatewayError, InvalidToken, TooManyRequests, Unprocessable
from gateway.identity import accounts, lifecycle, sessions
from gateway.identity.passwords import HashingBusy, PasswordHasher
from gateway.identity.sealing import Sealer
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import Principal, TokenService
from gateway.policy import HotState
from gateway.runtime import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.portal")

SIGN_IN = SIGN_IN_PATH
HOME = "/portal/sessions"
"""Where a browser lands after signing in when no (acceptable) return URL came with it."""
MAX_FIELD = 1024
SIGNED_OUT = "You are signed out."
BAD_LOGIN = "The email address or password is not right."
_GENERIC = {
    TooManyRequests: "Too many attempts. Wait a few minutes, or reset your password.",
    HashingBusy: "The service is busy. Try again in a moment.",
}


@dataclass(frozen=True, slots=True)
class SignedIn:
    principal: Principal
    session: Session
    idle: bool
    """The cookie is past its idle expiry (its session is still live): re-issue it."""


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted form's fields (the first value of each); a field too long or with control characters is
    dropped, as if it were missing."""
    data = await request.form()
    fields: dict[str, str] = {}
    for name in data:
        value = data.get(name)
        if isinstance(value, str) and len(value) <= MAX_FIELD and not any(ord(ch) < 32 for ch in value):
            fields[name] = value
    return fields


def _query(request: Request[Any, Any, Any], name: str) -> str | None:
    """A query parameter as sent (its first value), read here rather than declared: a page never answers 400
    for a strange query, it shows the form."""
    value = request.query_params.get(name)
    return value if isinstance(value, str) else None


def _return_url(value: str | None, settings: Settings) -> str:
    return checked_return_url(value, settings=settings, default=HOME)


def _sign_in_url(rd: str) -> str:
    return SIGN_IN if rd == HOME else f"{SIGN_IN}?rd={quote(rd, safe='')}"


async def current(
    request: Request[Any, Any, Any],
    settings: Settings,
    tokens: TokenService,
    hot: HotState,
    db: AsyncSession,
    *,
    allow_idle: bool = False,
) -> SignedIn | None:
    """The browser's signed-in session, from its cookie: a cookie this gateway signed, naming a session that is
    not revoked (the snapshot, then the database: a revoked session is refused at once) and not past its
    absolute end. With `allow_idle`, a cookie past its idle expiry counts too while its session was used within
    `idle_seconds` (a browser behind forward-auth keeps using it without a new cookie reaching it)."""
    browser = settings.browser
    value = read_cookie(request.headers.get("cookie"), browser.cookie_name)
    if not value:
        return None
    idle = False
    try:
        principal, _, _ = tokens.verify_session_cookie(value)
    except InvalidToken:
        if not allow_idle:
            return None
        try:
            principal, _, _ = tokens.genuine_session_cookie(value)
        except InvalidToken:
            return None
        idle = True
    session_id = principal.session_id
    if session_id is None or hot.session_revoked(session_id):
        return None
    row = await sessions.live(db, session_id, idle_seconds=browser.idle_seconds if idle else None)
    if row is None or row.user_id != principal.user_id:
        return None
    user = await db.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return SignedIn(principal=principal, session=row, idle=idle)


def _cookie_for(settings: Settings, tokens: TokenService, row: Session) -> str:
    """The Set-Cookie naming `row`: the JWT expires after the idle lifetime (re-issued while in use), the
    browser keeps it until the session's absolute end, so the portal can re-issue an idle one."""
    not_after = row.expires_at.timestamp()
    value, _ = tokens.issue_session_cookie(
        row.user_id,
        session_id=row.id,
        auth_time=int(row.auth_time.timestamp()),
        idle_seconds=settings.browser.idle_seconds,
        not_after=not_after,
    )
    return issuing_header(settings.browser, value, int(not_after))


async def _start_browser_session(
    request: Request[Any, Any, Any],
    settings: Settings,
    tokens: TokenService,
    db: AsyncSession,
    user_id: str,
    client: sessions.Client,
) -> tuple[str, str]:
    """A new session for a user who has proved every factor; the session the browser's old cookie named (even
    an expired one) is revoked first. Returns the Set-Cookie and the new session's id."""
    old = read_cookie(request.headers.get("cookie"), settings.browser.cookie_name)
    if old:
        try:
            previous, _, _ = tokens.genuine_session_cookie(old)
        except InvalidToken:
            previous = None
        row = await db.get(Session, previous.session_id) if previous and previous.session_id else None
        if row is not None and row.revoked_at is None:
            await sessions.revoke(db, row.user_id, row.id)
            write_event(db, "user:" + row.user_id, "session.replaced", target=row.id)
    row = await sessions.open_session(db, user_id, client, lifetime_seconds=settings.browser.absolute_seconds)
    write_event(db, "user:" + user_id, "session.portal_sign_in", target=row.id, after={"ip": client.ip})
    return _cookie_for(settings, tokens, row), row.id


async def after_first_factor(
    request: Request[Any, Any, Any],
    settings: Settings,
    tokens: TokenService,
    db: AsyncSession,
    outcome: User | accounts.MfaRequired,
    client: sessions.Client,
    target: str,
) -> ASGIResponse:
    """A first factor passed (the password form, or an outside provider's callback): the second-factor step, or
    a new browser session and its cookie and back to `target` (a checked return URL)."""
    if isinstance(outcome, accounts.MfaRequired):
        challenge = side_cookie(settings.browser, "mfa", outcome.mfa_token, outcome.expires_in)
        return redirect(f"{SIGN_IN}/mfa?rd={quote(target, safe='')}", settings, cookies=[challenge])
    cookie, _ = await _start_browser_session(request, settings, tokens, db, outcome.id, client)
    return redirect(target, settings, cookies=[cookie])


def return_url(value: str | None, settings: Settings) -> str:
    """`value` when it is a safe place to send a signed-in browser (access/return_url.py), else the home page."""
    return _return_url(value, settings)


def _message(error: GatewayError) -> str:
    for kind, text in _GENERIC.items():
        if isinstance(error, kind):
            return text
    return BAD_LOGIN


def _refused(settings: Settings, request: Request[Any, Any, Any], reason: CsrfRefused) -> ASGIResponse:
    log.info("portal form refused: %s", reason)
    return page(
        request,
        "message.html",
        settings,
        forms=Forms(request, settings.browser),
        status=403,
        title="Request refused",
        text="This form could not be accepted: it was sent from another site, or it has expired. "
        "Go back, reload the page and try again.",
        link=SIGN_IN,
        link_text="Go to sign-in",
    )


class PortalController(Controller):
    path = "/portal"
    include_in_schema = False

    # -- sign in -------------------------------------------------------------------------------------------

    @get("/sign-in")
    async def sign_in_page(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """The sign-in form. A browser already signed in goes straight to its return URL; one whose cookie only
        idled out while its session was in use (behind forward-auth) gets a fresh cookie on the way."""
        target = _return_url(_query(request, "rd"), settings)
        signed = await current(request, settings, tokens, hot, db, allow_idle=True)
        if signed is not None:
            cookies = []
            if signed.idle:
                signed.session.last_used_at = utcnow()
                cookies.append(_cookie_for(settings, tokens, signed.session))
            return redirect(target, settings, cookies=cookies)
        notice = SIGNED_OUT if _query(request, "signed_out") else None
        forms = Forms(request, settings.browser)
        return page(request, "sign_in.html", settings, forms=forms, rd=target, email="", notice=notice)

    @post("/sign-in", status_code=200)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        client: NamedDependency[sessions.Client],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenService],
        throttle: NamedDependency[LoginThrottle],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """Check the email and password (as POST /auth/login does); then the second-factor step, or a new
        session and its cookie, and back to the return URL, checked again."""
        fields = await _form(request)
        try:
            check_post(request, settings, "sign-in", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        target = _return_url(fields.get("rd"), settings)
        email = fields.get("email", "")
        forms = Forms(request, settings.browser)
        try:
            outcome = await accounts.first_factor(
                db, hasher, throttle, email=email, password=fields.get("password", ""), client=client
            )
        except accounts.EmailUnverified:
            error, status = "Confirm your email address first: follow the link we sent you.", 403
        except GatewayError as failure:
            error, status = _message(failure), failure.status
        else:
            return await after_first_factor(request, settings, tokens, db, outcome, client, target)
        return page(
            request, "sign_in.html", settings, forms=forms, status=status, rd=target, email=email, errors=[error]
        )

    @get("/sign-in/mfa")
    async def mfa_page(self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> ASGIResponse:
        """The second step: a code from the authenticator app, or a backup code."""
        target = _return_url(_query(request, "rd"), settings)
        if not read_side_cookie(request, settings.browser, "mfa"):
            return redirect(_sign_in_url(target), settings)
        return page(request, "mfa.html", settings, forms=Forms(request, settings.browser), rd=target)

    @post("/sign-in/mfa", status_code=200)
    async def mfa(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenService],
        throttle: NamedDependency[LoginThrottle],
        sealer: NamedDependency[Sealer],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """Finish the sign-in with a TOTP code or a backup code (as POST /auth/login/mfa does)."""
        fields = await _form(request)
        try:
            check_post(request, settings, "mfa", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        browser = settings.browser
        target = _return_url(fields.get("rd"), settings)
        forms = Forms(request, browser)
        challenge = read_side_cookie(request, browser, "mfa")
        if not challenge:
            return redirect(_sign_in_url(target), settings)
        try:
            user, client, used_backup = await accounts.second_factor(
                db, hasher, throttle, sealer, challenge_token=challenge, code=fields.get("code", "").strip()
            )
        except InvalidToken as failure:
            if failure.detail == "wrong code":
                text = "That code is not right. Try the current code, or a backup code."
                return page(request, "mfa.html", settings, forms=forms, status=401, rd=target, errors=[text])
            text = "Your sign-in took too long or had too many wrong codes. Sign in again."
            cookies = [clear_side_cookie(browser, "mfa")]
            return page(
                request,
                "sign_in.html",
                settings,
                forms=forms,
                status=401,
                rd=target,
                email="",
                errors=[text],
                cookies=cookies,
            )
        except GatewayError as failure:
            return page(
                request, "mfa.html", settings, forms=forms, status=failure.status, rd=target, errors=[_message(failure)]
            )
        cookie, session_id = await _start_browser_session(request, settings, tokens, db, user.id, client)
        if used_backup:
            await notify(db, session_id, "A backup code was used", "A backup code was used to sign in.")
        return redirect(target, settings, cookies=[cookie, clear_side_cookie(browser, "mfa")])

    # -- forgot and reset ----------------------------------------------------------------------------------

    @get("/forgot")
    async def forgot_page(self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> ASGIResponse:
        """Ask for a reset link."""
        return page(request, "forgot.html", settings, forms=Forms(request, settings.browser))

    @post("/forgot", status_code=200)
    async def forgot(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        client: NamedDependency[sessions.Client],
        throttle: NamedDependency[LoginThrottle],
        services: NamedDependency[Services],
    ) -> ASGIResponse:
        """The same answer for every address, given before any lookup (the link is prepared afterwards)."""
        fields = await _form(request)
        try:
            check_post(request, settings, "forgot", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        forms = Forms(request, settings.browser)
        try:
            await throttle.check_ip(client.ip)
        except TooManyRequests:
            return page(request, "forgot.html", settings, forms=forms, status=429, errors=[_GENERIC[TooManyRequests]])
        response = page(
            request,
            "message.html",
            settings,
            forms=forms,
            title="Check your email",
            text="If an account uses this address, we have sent it a link to choose a new password. "
            "The link works once, for one hour.",
            link=SIGN_IN,
            link_text="Back to sign-in",
        )
        response.background = BackgroundTask(send_reset, services, fields.get("email", ""))
        return response

    @get("/reset")
    async def reset_page(self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> ASGIResponse:
        """Choose a new password (the link from the reset email)."""
        return page(
            request,
            "reset.html",
            settings,
            forms=Forms(request, settings.browser),
            token=_query(request, "token") or "",
        )

    @post("/reset", status_code=200)
    async def reset(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        hasher: NamedDependency[PasswordHasher],
        throttle: NamedDependency[LoginThrottle],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """Set the new password (as POST /auth/reset-password does): every session ends, this browser's too."""
        fields = await _form(request)
        try:
            check_post(request, settings, "reset", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        forms = Forms(request, settings.browser)
        token, password = fields.get("token", ""), fields.get("password", "")
        if password != fields.get("confirm", ""):
            errors = ["The two passwords are not the same."]
            return page(request, "reset.html", settings, forms=forms, status=422, token=token, errors=errors)
        try:
            email = await lifecycle.reset_password(db, hasher, token=token, password=password)
        except Unprocessable as failure:
            errors = [failure.detail.removeprefix("password: ").capitalize() + "."]
            return page(request, "reset.html", settings, forms=forms, status=422, token=token, errors=errors)
        except BadRequest:
            errors = ["This link is not valid any more: it was used, replaced by a newer one, or expired."]
            return page(request, "forgot.html", settings, forms=forms, status=400, errors=errors)
        await throttle.reset(email)
        return page(
            request,
            "message.html",
            settings,
            forms=forms,
            cookies=[clearing_header(settings.browser)],
            title="Password changed",
            text="Your password was changed and every session was signed out. Sign in with the new password.",
            link=SIGN_IN,
            link_text="Sign in",
        )

    # -- sign out ------------------------------------------------------------------------------------------

    @get("/sign-out")
    async def sign_out_page(self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> ASGIResponse:
        """A button that signs out (a link from an application lands here; signing out itself is a POST)."""
        return page(
            request,
            "sign_out.html",
            settings,
            forms=Forms(request, settings.browser),
            next=_query(request, "next") or "",
        )

    @post("/sign-out", status_code=200)
    async def sign_out(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """End this browser's session and clear its cookie; then to an exact `post_logout_urls` entry if one
        was asked for (REQ-B3), else to the sign-in page."""
        fields = await _form(request)
        try:
            check_post(request, settings, "sign-out", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        browser = settings.browser
        value = read_cookie(request.headers.get("cookie"), browser.cookie_name)
        if value:
            try:
                principal, _, _ = tokens.genuine_session_cookie(value)
            except InvalidToken:
                principal = None
            row = await db.get(Session, principal.session_id) if principal and principal.session_id else None
            if row is not None and row.revoked_at is None and principal is not None:
                await sessions.revoke(db, row.user_id, row.id)
                write_event(db, principal.subject, "session.logout", target=row.id)
        wanted = fields.get("next", "")
        target = wanted if wanted and wanted in browser.post_logout_urls else f"{SIGN_IN}?signed_out=1"
        return redirect(target, settings, cookies=[clearing_header(browser)])

    # -- sessions ------------------------------------------------------------------------------------------

    @get("/sessions")
    async def sessions_page(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """The signed-in user's sessions (browsers and token logins alike), each with a button that ends it."""
        signed = await current(request, settings, tokens, hot, db)
        if signed is None:
            return redirect(_sign_in_url(HOME), settings)
        signed.session.last_used_at = utcnow()
        user = await db.get(User, signed.principal.user_id)
        rows = await sessions.active(db, signed.principal.user_id, tokens.settings)
        ended = _query(request, "ended")
        notice = None
        if ended is not None and ended.isdigit():
            notice = "Session ended." if ended == "1" else f"{int(ended)} sessions ended."
        return page(
            request,
            "sessions.html",
            settings,
            forms=Forms(request, settings.browser),
            email=user.email if user else "",
            rows=rows,
            current_id=signed.session.id,
            notice=notice,
        )

    @post("/sessions/{session_id:str}/end", status_code=200)
    async def end_session(
        self,
        request: Request[Any, Any, Any],
        session_id: FromPath[str],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> ASGIResponse:
        """End one of the user's sessions, or `others`: every one but this browser's. Ending this browser's
        own session signs it out."""
        fields = await _form(request)
        try:
            check_post(request, settings, "sessions", fields)
        except CsrfRefused as reason:
            return _refused(settings, request, reason)
        signed = await current(request, settings, tokens, hot, db)
        if signed is None:
            return redirect(_sign_in_url(HOME), settings)
        principal, mine = signed.principal, signed.session.id
        if session_id == "others":
            count = await sessions.revoke_all(db, principal.user_id, keep=mine)
            write_event(
                db, principal.subject, "session.logout_others", target=principal.user_id, after={"ended": count}
            )
            return redirect(f"{HOME}?ended={count}", settings)
        try:
            await sessions.revoke(db, principal.user_id, session_id)
        except GatewayError:
            return redirect(HOME, settings)  # not one of this user's sessions: nothing to say about it
        write_event(db, principal.subject, "session.revoke", target=session_id)
        if session_id == mine:
            return redirect(f"{SIGN_IN}?signed_out=1", settings, cookies=[clearing_header(settings.browser)])
        return redirect(f"{HOME}?ended=1", settings)
