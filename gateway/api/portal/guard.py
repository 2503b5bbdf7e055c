"""What every portal page shares: the CSRF check (a per-form token plus Origin / Sec-Fetch-Site), the portal's
short-lived side cookies, the security headers, and rendering a page.

CSRF (REQ-B11): a form token is HMAC-SHA256 of the form's name under a random secret the browser holds in its
own `__Host-` cookie (HttpOnly, SameSite=Strict, two hours), compared in constant time: a page on another site
can neither read that cookie nor, thanks to the `__Host-` prefix, plant one from a sibling subdomain. Besides the
token, a POST must come from the portal itself: `Sec-Fetch-Site` same-origin (or none: typed by the user), an
`Origin` that is the portal's, the request's own or an `allowed_origins` entry, and at least one of the two.
Under the pages' `Referrer-Policy: no-referrer` browsers send `Origin: null` with form posts; then
`Sec-Fetch-Site` (which a page cannot forge) decides alone, as in Go's CrossOriginProtection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response
from litestar.response.base import ASGIResponse

from gateway.access.cookies import read_cookie
from gateway.access.return_url import portal_origin
from gateway.settings import Browser, Settings

CSRF_SECONDS = 2 * 3600
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}"
    "main{max-width:26rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.12)}"
    "main.wide{max-width:48rem}"
    "h1{font-size:1.4rem;margin:.2rem 0 1rem}"
    "label{display:block;font-weight:600;margin:.9rem 0 .3rem}"
    "input[type=email],input[type=password],input[type=text]{box-sizing:border-box;width:100%;padding:.55rem;"
    "border:1px solid #8a93a6;border-radius:4px;font:inherit}"
    "input:focus,button:focus,a:focus{outline:3px solid #2f6fde;outline-offset:1px}"
    "button{margin-top:1.2rem;padding:.55rem 1.1rem;border:0;border-radius:4px;background:#2f5fbf;color:#fff;"
    "font:inherit;cursor:pointer}"
    "button.secondary{background:#5b6475}"
    ".errors{border:2px solid #b3261e;background:#fdecea;padding:.6rem 1rem;border-radius:4px}"
    ".errors h2{font-size:1rem;margin:0 0 .3rem}"
    ".notice{border:2px solid #1e7b34;background:#e8f5ec;padding:.6rem 1rem;border-radius:4px}"
    ".brand{display:flex;align-items:center;gap:.6rem;font-weight:700}.brand img{max-height:2.5rem}"
    "table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:.4rem;border-bottom:1px solid #dde}"
    "td form button{margin:0}.links{margin-top:1.2rem}.links a{margin-right:1rem}"
    ".hint{color:#4a5365;font-size:.9rem}"
)
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
"""The Content-Security-Policy hash of the one inline stylesheet: no other style (and no script) runs."""


class CsrfRefused(Exception):
    """A portal form was posted without a valid token, or from another origin."""


def side_cookie_name(browser: Browser, purpose: str) -> str:
    """The name of one of the portal's own short-lived cookies (`csrf`, `mfa`): `__Host-` whenever cookies are
    Secure."""
    return ("__Host-gateway_" if browser.cookie_secure else "gateway_") + purpose


def side_cookie(browser: Browser, purpose: str, value: str, max_age: int) -> str:
    """Set-Cookie for a side cookie: HttpOnly, SameSite=Strict, Path=/, never a Domain."""
    parts = [f"{side_cookie_name(browser, purpose)}={value}", f"Max-Age={max_age}", "Path=/", "HttpOnly"]
    parts.append("SameSite=Strict")
    if browser.cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_side_cookie(browser: Browser, purpose: str) -> str:
    return side_cookie(browser, purpose, "", 0)


def read_side_cookie(request: Request[Any, Any, Any], browser: Browser, purpose: str) -> str | None:
    return read_cookie(request.headers.get("cookie"), side_cookie_name(browser, purpose))


def _usable(secret: str) -> bool:
    """A CSRF secret as the portal makes them (at least 256 bits): a short planted value is never used."""
    return 43 <= len(secret) <= 64


def form_token(secret: str, form: str) -> str:
    """The token a form named `form` carries for the browser holding `secret`."""
    digest = hmac.new(secret.encode(), b"gateway-portal-form:" + form.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Forms:
    """The CSRF secret of this browser (made now when it has none) and the tokens of the forms on a page."""

    def __init__(self, request: Request[Any, Any, Any], browser: Browser) -> None:
        existing = read_side_cookie(request, browser, "csrf")
        self.secret = existing if existing and _usable(existing) else secrets.token_urlsafe(32)
        self.set_cookie = None if self.secret == existing else side_cookie(browser, "csrf", self.secret, CSRF_SECONDS)

    def token(self, form: str) -> str:
        return form_token(self.secret, form)


def allowed_origins(request: Request[Any, Any, Any], settings: Settings) -> set[str]:
    """The portal's origin, the request's own (scheme and Host as received) and the configured extra origins."""
    own = f"{request.scope.get('scheme', 'http')}://{request.headers.get('host', '')}".lower()
    return {portal_origin(settings).lower(), own, *(origin.lower() for origin in settings.browser.allowed_origins)}


def check_post(request: Request[Any, Any, Any], settings: Settings, form: str, fields: Mapping[str, str]) -> None:
    """Refuse (CsrfRefused) a portal POST from another site, or without this browser's token for `form`."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is None and origin is None:
        raise CsrfRefused("neither Origin nor Sec-Fetch-Site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise CsrfRefused(f"Sec-Fetch-Site: {site[:32]}")
    if origin == "null" and site is not None:
        pass  # our own `Referrer-Policy: no-referrer` makes browsers send `Origin: null`; Sec-Fetch-Site decides
    elif origin is not None and origin.lower() not in allowed_origins(request, settings):
        raise CsrfRefused("Origin not allowed")
    secret = read_side_cookie(request, settings.browser, "csrf")
    sent = fields.get("csrf_token", "")
    if not secret or not _usable(secret) or not sent:
        raise CsrfRefused("form token or its cookie missing")
    if not hmac.compare_digest(form_token(secret, form).encode(), sent.encode()):
        raise CsrfRefused("form token wrong")


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def security_headers(settings: Settings) -> list[tuple[str, str]]:
    """CSP (no script; the one inline stylesheet by hash; images only from the logo's origin; forms only to the
    portal and the places it redirects to, since browsers check form-action on a form's redirects too), no
    framing, no referrer (reset links carry their token in the URL), no caching."""
    browser = settings.browser
    images = "'self'"
    if browser.logo_url and (logo := _origin_of(browser.logo_url)):
        images += " " + logo
    targets = ["'self'", portal_origin(settings)]
    scheme = "https" if browser.cookie_secure else "http"
    for entry in browser.allowed_hosts:
        targets.append(f"{scheme}://*{entry}" if entry.startswith(".") else f"{scheme}://{entry}")
    targets += [origin for url in browser.post_logout_urls if (origin := _origin_of(url))]
    forms = " ".join(dict.fromkeys(targets))
    csp = (
        f"default-src 'none'; style-src '{STYLE_HASH}'; img-src {images}; form-action {forms}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return [
        ("content-security-policy", csp),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("pragma", "no-cache"),
        ("x-content-type-options", "nosniff"),
    ]


def page(
    request: Request[Any, Any, Any],
    name: str,
    settings: Settings,
    *,
    forms: Forms,
    status: int = 200,
    cookies: Iterable[str] = (),
    **context: Any,
) -> ASGIResponse:
    """Render `name` with the application's template engine (Jinja2, autoescaping), with the branding, the
    stylesheet and the form tokens; security headers and cookies set (a Set-Cookie header each)."""
    browser = settings.browser
    engine = request.app.template_engine
    if engine is None:  # the controller is mounted only together with its template config (api/portal)
        raise RuntimeError("the portal's templates are not configured")
    template = engine.get_template(name)
    html = template.render(
        product_name=browser.product_name,
        logo_url=browser.logo_url,
        style=STYLE,
        forms=forms,
        providers=[(provider.name, provider.label) for provider in settings.identity_providers],
        **context,
    )
    headers = security_headers(settings)
    headers += [("set-cookie", cookie) for cookie in (*([forms.set_cookie] if forms.set_cookie else []), *cookies)]
    return ASGIResponse(body=html.encode(), status_code=status, media_type="text/html; charset=utf-8", headers=headers)


class Prepared(Response[Any]):
    """A portal answer already made (`redirect`, `page`: several Set-Cookie headers, exact Location bytes), returned
    where a handler's annotation is a Response (the provider callback answers JSON to API clients)."""

    def __init__(self, prepared: ASGIResponse) -> None:
        super().__init__(None)
        self.prepared = prepared

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> ASGIResponse:
        return self.prepared


def redirect(location: str, settings: Settings, *, cookies: Iterable[str] = ()) -> ASGIResponse:
    """303 to `location` (already checked by the caller; sent byte for byte, never re-quoted), with the security
    headers and cookies."""
    headers = [("location", location), *security_headers(settings), *(("set-cookie", c) for c in cookies)]
    return ASGIResponse(body=b"", status_code=303, media_type="text/plain", headers=headers)
