"""What each route accepts and tells its upstream, and the data plane's view of `[browser]`: the session cookie
read, checked and re-issued, and the redirect that sends a browser to sign in."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.access import cookies
from gateway.access.browser import (
    BrowserHead,
    normal_origin,
    portal_origin,
    read_browser_head,
    sign_in_location,
    without_cookie,
)
from gateway.access.credentials import TOKENS_AND_KEYS, CookieSession
from gateway.identity.tokens import Principal, TokenService
from gateway.proxy.identity import needs_directory
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
    """Each route's access, by prefix."""
    access = {}
    for route in settings.routes:
        identity = route.identity_headers or settings.identity_headers
        access[route.prefix] = RouteAccess(
            accepts=frozenset(route.auth),
            identity=identity,
            cookie="cookie" in route.auth,
            lookup=needs_directory(identity),
        )
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

    @classmethod
    def from_settings(cls, settings: Settings) -> Browsers:
        allowed = frozenset(o for o in (normal_origin(v) for v in settings.browser.allowed_origins) if o)
        return cls(settings.browser, portal_origin(settings), allowed)

    def call(self, raw: list[tuple[bytes, bytes]], own: str | None, *, websocket: bool = False) -> BrowserCall:
        head = read_browser_head(raw)
        return BrowserCall(head, cookies.read_cookie(head.cookie, self.settings.cookie_name), own, websocket)

    def refreshed(self, tokens: TokenService, principal: Principal, cookie: CookieSession) -> str | None:
        """The Set-Cookie value re-issuing an active browser's cookie (the idle lifetime slides), or None."""
        if principal.session_id is None or not cookies.needs_refresh(self.settings, cookie.issued_at, cookie.not_after):
            return None
        value, expires = tokens.issue_session_cookie(
            principal.user_id,
            session_id=principal.session_id,
            auth_time=principal.auth_time,
            idle_seconds=self.settings.idle_seconds,
            not_after=cookie.not_after,
        )
        return cookies.issuing_header(self.settings, value, expires)

    def clearing(self) -> str:
        return cookies.clearing_header(self.settings)

    def sign_in(self, return_url: str | None) -> str:
        return sign_in_location(self.portal, return_url)

    def strip_from(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The upstream's headers without the gateway's session cookie (the rest of Cookie stays)."""
        name = self.settings.cookie_name
        kept: list[tuple[str, str]] = []
        for header, value in headers:
            if header == "cookie" and name in value:
                value = without_cookie(value, name)
                if not value:
                    continue
            kept.append((header, value))
        return kept


def redirect_headers(location: str, *, set_cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store")]
    if set_cookie is not None:
        headers.append((b"set-cookie", set_cookie.encode("latin-1")))
    return headers
