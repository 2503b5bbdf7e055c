"""Browsers on cookie-accepting endpoints: the headers they send, the cross-site check for unsafe methods, and
where an unauthenticated navigation is sent to sign in.

Cross-site request forgery (REQ-B11, as Go's CrossOriginProtection): a cookie-authenticated request with an
unsafe method is refused (403) when `Sec-Fetch-Site` is present and is neither `same-origin` nor `none`, when
`Origin` is present and is neither the request's own origin (as trusted proxies let us see it: access/peer.py)
nor listed in `[browser] allowed_origins` (a listed origin is accepted first, as Go's trusted origins), or when
both are absent (every browser since 2023 sends one; what
sends neither is not a browser, and a non-browser has a token or key to use instead). Bearer and API-key
requests carry no ambient credential and are not checked.

A navigation is a GET or HEAD whose `Accept` names `text/html` and that is not a script's request
(`X-Requested-With: XMLHttpRequest`, or a `Sec-Fetch-Mode` other than navigate): only those are sent to the
portal's sign-in page; everything else keeps the 401 problem with its `WWW-Authenticate` challenge.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from gateway.access.return_url import SIGN_IN_PATH
from gateway.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class CrossSiteRequest(Forbidden):
    """A cookie-authenticated unsafe request (or WebSocket handshake) from another site."""

    slug = "cross-site-request"
    title = "Cross-site request refused"


@dataclass(slots=True)
class BrowserHead:
    """The request headers that matter for browsers (read only on endpoints that accept the cookie)."""

    cookie: str | None = None
    """Every Cookie header, joined (HTTP/2 sends one per cookie)."""
    accept: str = ""
    origin: str | None = None
    fetch_site: str | None = None
    fetch_mode: str | None = None
    requested_with: str | None = None


def read_browser_head(raw: list[tuple[bytes, bytes]]) -> BrowserHead:
    head = BrowserHead()
    cookies: list[str] = []
    for name, value in raw:
        if name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"accept":
            head.accept = value.decode("latin-1").lower()
        elif name == b"origin":
            head.origin = value.decode("latin-1").strip()
        elif name == b"sec-fetch-site":
            head.fetch_site = value.decode("latin-1").strip().lower()
        elif name == b"sec-fetch-mode":
            head.fetch_mode = value.decode("latin-1").strip().lower()
        elif name == b"x-requested-with":
            head.requested_with = value.decode("latin-1").strip().lower()
    if cookies:
        head.cookie = "; ".join(cookies)
    return head


def normal_origin(value: str) -> str | None:
    """`scheme://host[:port]` lower-cased, without the scheme's default port; None for anything else (`null`)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    shown = "" if port is None or str(port) == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown}"


def own_origin(scheme: str, host: str | None) -> str | None:
    """The origin of the request itself: its scheme (https behind TLS or a trusted proxy saying so) and Host."""
    return normal_origin(f"{scheme}://{host}") if host else None


def check_same_origin(
    method: str, head: BrowserHead, own: str | None, allowed: frozenset[str], *, websocket: bool = False
) -> None:
    """Raise CrossSiteRequest for a cookie-authenticated request another site could have made (see the module
    docstring). A WebSocket handshake is a GET, but it must come from an allowed origin too (Cross-Site
    WebSocket Hijacking): browsers always send its `Origin`."""
    if method in SAFE_METHODS and not websocket:
        return
    origin = normal_origin(head.origin) if head.origin is not None else None
    if origin is not None and origin in allowed:
        return  # a sibling site the configuration vouches for, whatever Sec-Fetch-Site says of it
    if head.fetch_site is not None and head.fetch_site not in ("same-origin", "none"):
        raise CrossSiteRequest(f"Sec-Fetch-Site: {head.fetch_site} requests may not use the session cookie")
    if head.origin is None:
        if head.fetch_site is not None and not websocket:
            return  # the browser says: same origin, or the user's own action
        raise CrossSiteRequest("Origin: missing on a cookie-authenticated request")
    if origin is None or origin != own:
        raise CrossSiteRequest("Origin: not this site's, nor in browser.allowed_origins")


def wants_html(method: str, head: BrowserHead) -> bool:
    """Whether an unauthenticated request is a browser navigation that the sign-in page should answer."""
    if method not in ("GET", "HEAD") or "text/html" not in head.accept:
        return False
    if head.requested_with == "xmlhttprequest":
        return False
    return head.fetch_mode is None or head.fetch_mode in ("navigate", "nested-navigate")


def sign_in_location(portal: str, return_url: str | None) -> str:
    """The sign-in page, with the URL to come back to (`rd`; the portal validates it)."""
    if not return_url:
        return portal + SIGN_IN_PATH
    return f"{portal}{SIGN_IN_PATH}?rd={quote(return_url, safe='')}"


def request_url(scheme: str, host: str | None, target: str) -> str | None:
    """The absolute URL of a request (`target` = path and query as sent), or None without a usable Host."""
    if not host or any(c in host for c in "/?#@\\ \t\r\n"):
        return None
    if not target.startswith("/"):
        return None
    return f"{scheme}://{host}{target}"


def without_cookie(value: str, names: str | frozenset[str]) -> str:
    """A Cookie header value without cookie `names` (the gateway's cookies are not the upstream's business)."""
    drop = frozenset({names}) if isinstance(names, str) else names
    kept = [part for part in value.split(";") if part.strip() and part.strip().split("=", 1)[0].strip() not in drop]
    return "; ".join(part.strip() for part in kept)
