"""What each route accepts and tells its upstream, and the data plane's view of `[browser]`: the session cookie
read, checked and re-issued, and the redirect that sends a browser to sign in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.access import cookies
from gateway.access.browser import (
    BrowserHead,
    normal_origin,
    read_browser_head,
    sign_in_location,
    wants_html,
    without_cookie,
)
from gateway.access.credentials import TOKENS_AND_KEYS, CookieSession
from gateway.access.return_url import portal_origin
from gateway.asgitypes import Send
from gateway.errors import CredentialExpired, Unauthenticated, send_problem
from gateway.identity.tokens import Principal, TokenService
from gateway.proxy.identity import needs_directory
from gateway.proxy.match import route_name
from gateway.settings import Browser, Settings


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """A route's `auth` and `identity_headers`, resolved."""

    accepts: frozenset[str]
    identity: tuple[str, ...]
    cookie: bool
    """Whether the route accepts the session cookie (and sends browsers to sign in)."""
    lookup: bool = False
    """Whether `identity` names the user's email or name (looked up in the directory)."""


def route_access(settings: Settings) -> dict[str, RouteAccess]:
    """Each route's access, by route name (hosts and prefix, unique: settings validation)."""
    access: dict[str, RouteAccess] = {}
    for route in settings.routes:
        identity = route.identity_headers or settings.identity_headers
        resolved = RouteAccess(
            accepts=frozenset(route.auth),
            identity=identity,
            cookie="cookie" in route.auth,
            lookup=needs_directory(identity),
        )
        access[route_name(route)] = resolved
    return access


DEFAULT_ACCESS = RouteAccess(accepts=TOKENS_AND_KEYS, identity=("user", "org", "roles"), cookie=False)


@dataclass(slots=True)
class BrowserCall:
    """A request on a cookie-accepting endpoint: its browser headers, the cookie's value, its own origin."""

    head: BrowserHead
    cookie: str | None
    own_origin: str | None
    websocket: bool = False


@dataclass(frozen=True, slots=True)
class Browsers:
    """`[browser]` as the data plane uses it."""

    settings: Browser
    portal: str
    """The portal's origin: where the sign-in page is."""
    allowed_origins: frozenset[str]
    own_cookies: frozenset[str]
    """Every cookie the gateway sets, removed from what upstreams receive."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Browsers:
        allowed = frozenset(o for o in (normal_origin(v) for v in settings.browser.allowed_origins) if o)
        own = cookies.gateway_cookie_names(settings.browser)
        return cls(settings.browser, portal_origin(settings), allowed, own)

    def call(self, raw: list[tuple[bytes, bytes]], own: str | None, *, websocket: bool = False) -> BrowserCall:
        head = read_browser_head(raw)
        return BrowserCall(head, cookies.read_cookie(head.cookie, self.settings.cookie_name), own, websocket)

    def refreshed(self, tokens: TokenService, principal: Principal, cookie: CookieSession) -> str | None:
        """The Set-Cookie value re-issuing an active browser's cookie (the idle lifetime slides), or None."""
        if principal.session_id is None or not cookies.needs_refresh(self.settings, cookie.issued_at, cookie.not_after):
            return None
        value, _ = tokens.issue_session_cookie(
            principal.user_id,
            session_id=principal.session_id,
            auth_time=principal.auth_time,
            idle_seconds=self.settings.idle_seconds,
            not_after=cookie.not_after,
        )
        # The browser keeps the cookie until the session's end, past the token's idle expiry: an idle-expired
        # cookie still reaches the portal, which resumes a session still in use (see api/portal).
        return cookies.issuing_header(self.settings, value, cookie.not_after)

    def clearing(self) -> str:
        return cookies.clearing_header(self.settings)

    def sign_in(self, return_url: str | None) -> str:
        return sign_in_location(self.portal, return_url)

    def strip_from(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The upstream's headers without the gateway's cookies: its session and the portal's side cookies (the
        rest of Cookie stays)."""
        names = self.own_cookies
        kept: list[tuple[str, str]] = []
        for header, value in headers:
            if header == "cookie" and any(name in value for name in names):
                value = without_cookie(value, names)
                if not value:
                    continue
            kept.append((header, value))
        return kept


async def send_to_sign_in(
    browsers: Browsers,
    send: Send,
    error: Unauthenticated,
    browser: BrowserCall,
    *,
    method: str,
    return_url: str | None,
    other_credential: bool,
    request_id: str,
    extra: Iterable[tuple[bytes, bytes]] = (),
    forward_auth: bool = False,
    nginx: bool = False,
) -> int:
    """Answer a request without a valid credential on a cookie-accepting endpoint; returns the status.

    A navigation (access/browser.py `wants_html`) goes to the sign-in page with `return_url` as `rd`: 302 for
    GET and HEAD. In forward-auth any method's navigation does (a form post gets 303), and for nginx
    (`nginx`) the answer is the 401 with `Location`. Anything else is the 401 problem. A session cookie that was
    the credential and was refused is cleared either way, unless it was only idle-expired: the portal re-issues
    such a cookie while its session is still in use (and clears it otherwise)."""
    cleared: list[tuple[bytes, bytes]] = list(extra)
    if browser.cookie is not None and not other_credential and not isinstance(error, CredentialExpired):
        cleared.append((b"set-cookie", browsers.clearing().encode("latin-1")))
    if not wants_html("GET" if forward_auth else method, browser.head):
        return await send_problem(send, error, request_id=request_id, extra=cleared)
    location = (b"location", browsers.sign_in(return_url).encode("latin-1"))
    if nginx:
        return await send_problem(send, error, request_id=request_id, extra=[location, *cleared])
    status = 302 if method in ("GET", "HEAD") else 303
    headers = [
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
        location,
        *cleared,
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return status
