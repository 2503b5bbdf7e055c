"""The browser session cookie on the wire: reading it from a request, the Set-Cookie that issues or clears it,
and when an active browser's cookie is re-issued (the idle lifetime slides).

The value is a session-cookie JWT (identity/tokens.py, `typ: gw-session+jwt`) naming a session (a login) like an
access token's `sid`: the same session list, revocation, logout-all and password change end it.
"""

from __future__ import annotations

import time
from http.cookies import CookieError, SimpleCookie

from gateway.settings import Browser

REFRESH_AFTER_SECONDS = 300
"""An active browser's cookie is re-issued once it is this old (or a quarter of the idle lifetime, if less)."""


SIDE_COOKIES = ("csrf", "mfa", "login")
"""The portal's and the provider sign-in's own short-lived cookies: `gateway_<purpose>`, `__Host-` when Secure."""


def gateway_cookie_names(browser: Browser) -> frozenset[str]:
    """Every cookie the gateway sets (its session and its side cookies): none of them is an upstream's business."""
    prefix = "__Host-gateway_" if browser.cookie_secure else "gateway_"
    return frozenset({browser.cookie_name, *(prefix + purpose for purpose in SIDE_COOKIES)})


def read_cookie(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a Cookie request header, or None (absent, or a header that does not parse)."""
    if not cookie_header or name not in cookie_header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def issuing_header(browser: Browser, value: str, expires_at: int) -> str:
    """The Set-Cookie value carrying a session cookie that the browser keeps until `expires_at` (epoch s)."""
    max_age = max(0, expires_at - int(time.time()))
    return _attributes(browser, f"{browser.cookie_name}={value}; Max-Age={max_age}")


def clearing_header(browser: Browser) -> str:
    """The Set-Cookie value that removes the session cookie (same name, path and domain, expired)."""
    return _attributes(browser, f"{browser.cookie_name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")


def needs_refresh(browser: Browser, issued_at: int, not_after: int) -> bool:
    """Whether a valid cookie issued at `issued_at` should be replaced, sliding its idle expiry forward."""
    now = time.time()
    if now >= not_after - 1:
        return False  # the session ends anyway; a new cookie could not outlive it
    return now - issued_at >= min(REFRESH_AFTER_SECONDS, browser.idle_seconds // 4)


def _attributes(browser: Browser, head: str) -> str:
    parts = [head, "Path=/", "HttpOnly", "SameSite=Lax"]
    if browser.cookie_secure:
        parts.append("Secure")
    if browser.cookie_domain:
        parts.append(f"Domain={browser.cookie_domain}")
    return "; ".join(parts)
