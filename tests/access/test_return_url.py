"""The return-URL check (REQ-B1, REQ-B4): a table of payloads, each either kept exactly or replaced by the default."""

from __future__ import annotations

import pytest

from gateway.access.return_url import acceptable, checked_return_url, portal_origin, sign_in_url
from gateway.settings import Browser, settings_from_mapping

PORTAL = "https://auth.good.com"
BROWSER = Browser(allowed_hosts=("app.good.com", "api.good.com:8443", ".apps.good.com", "[2001:db8::1]:9443"))

ALLOWED = [
    "/",
    "/app",
    "/app/page?x=1&y=two#frag",
    "/a/b/c.html",
    "/search?q=hello%20world",
    "/file.tar.gz",
    "/.well-known/thing",  # a dot at the start of a name is not a dot segment
    "/a..b/c",
    "/path%20with%20space",
    "https://auth.good.com/portal/sessions",
    "https://auth.good.com",
    "https://auth.good.com:443/",  # the default port written out
    "HTTPS://auth.good.com/x",  # a scheme is case-insensitive
    "https://AUTH.GOOD.COM/x",  # and so is a host
    "https://app.good.com/dashboard?tab=1",
    "https://api.good.com:8443/v1",
    "https://one.apps.good.com/",
    "https://deep.one.apps.good.com/x",
    "https://[2001:db8::1]:9443/ipv6",
    "https://app.good.com/?next=/relative",
]

REFUSED = [
    # protocol-relative and backslash tricks (CVE-2020-5233 and friends)
    "//evil.com",
    "///evil.com",
    "////evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "/\\/evil.com",
    "/%5Cevil.com",
    "/%5cevil.com",
    "/%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "/%252F%252Fevil.com",  # double-encoded
    "%2F%2Fevil.com",
    # whitespace and controls between the slashes (CVE-2020-11053, CVE-2020-4037)
    "/%09/evil.com",
    "/%0a/evil.com",
    "/%0d/evil.com",
    "/%0b/evil.com",
    "/%0c/evil.com",
    "/%20/evil.com",
    "/%00/evil.com",
    "/%7f/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r/evil.com",
    "/ /evil.com",
    "/\x0b/evil.com",
    "/app\r\nSet-Cookie: x=1",
    "/app%0d%0aSet-Cookie:%20x=1",
    " /app",
    "/app ",
    # dot segments that could collapse into //
    "/.//evil.com",
    "/./evil.com",
    "/../evil.com",
    "/..//evil.com",
    "/a/../../evil.com",
    "/%2e%2e/evil.com",
    "/%2E/%2Fevil.com",
    "/.%2F/evil.com",
    # unicode look-alike slashes and other non-ASCII
    "/\uff0fevil.com",
    "/\u2215evil.com",
    "/\u2044evil.com",
    "/%EF%BC%8Fevil.com",
    "https://app.good.com\uff0f@evil.com",
    "https://\u0430pp.good.com/",  # a Cyrillic a
    "/caf\u00e9",
    # other schemes and scheme confusion (CVE-2019-13038)
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "javascript://%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox",
    "ftp://app.good.com/",
    "http://app.good.com/",  # plain http while cookies are Secure
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "https:\\\\evil.com",
    "https:/\\evil.com",
    "http:evil.com",
    "http:/evil.com",
    "evil.com",
    "evil.com/path",
    "app.good.com",
    "",
    # hosts that are not on the list
    "https://evil.com",
    "https://evil.com/app.good.com",
    "https://app.good.com.evil.com/",
    "https://good.com/",
    "https://xgood.com/",
    "https://xapp.good.com/",
    "https://apps.good.com/",  # `.apps.good.com` means its subdomains
    "https://evilapps.good.com/",
    "https://evil.com#app.good.com",
    "https://evil.com?app.good.com",
    "https://app.good.com./",  # a trailing dot is another spelling
    "https://app.good.com%2eevil.com/",
    "https://app%2egood.com/",
    "https://*.apps.good.com/",
    "https://app_good.com/",
    # userinfo (https://good@evil)
    "https://app.good.com@evil.com/",
    "https://user:pass@app.good.com/",
    "https://@app.good.com/",
    "https://app.good.com:@evil.com/",
    "https://evil.com\\@app.good.com/",
    "https://evil.com%40app.good.com/",
    # ports must match exactly
    "https://app.good.com:8443/",
    "https://app.good.com:443@evil.com/",
    "https://api.good.com/v1",
    "https://api.good.com:443/v1",
    "https://api.good.com:08443/v1",
    "https://api.good.com:+8443/v1",
    "https://api.good.com:99999/v1",
    "https://app.good.com:0/",
    "https://auth.good.com:8443/",
    "https://one.apps.good.com:8443/",
    # IPv6
    "https://[2001:db8::1]/ipv6",
    "https://[2001:db8::2]:9443/ipv6",
    "https://[2001:db8::1:9443/ipv6",
    "https://[::1]/",
    "https://127.0.0.1/",
    # paths inside an allowed absolute URL
    "https://app.good.com//evil.com",
    "https://app.good.com/%2F%2Fevil.com",
    "https://app.good.com/..//evil.com",
    # redirect chaining through query values (REQ-B4)
    "/app?next=https://evil.com",
    "/app?next=http://evil.com",
    "/app?next=//evil.com",
    "/app?next=javascript:alert(1)",
    "/app?next=JAVASCRIPT:alert(1)",
    "/app?next=data:text/html,x",
    "/app?a=1&next=%2F%2Fevil.com",
    "/app?next=https%3A%2F%2Fevil.com",
    "/app?next=https%253A%252F%252Fevil.com",
    "/app?https://evil.com",
    "/app#next=https://evil.com",
    "https://app.good.com/?rd=https://evil.com",
    "https://app.good.com/?rd=%2F%2Fevil.com",
    # malformed escapes and characters a URL never holds raw
    "/app%",
    "/app%zz",
    "/app%2",
    '/app"onmouseover=alert(1)',
    "/app<script>",
    "/app{x}",
    "/app|x",
    "/app^x",
    "/app`x",
    "/" + "a" * 2048,
]


@pytest.mark.parametrize("target", ALLOWED, ids=repr)
def test_allowed_targets_are_kept_exactly(target: str) -> None:
    """REQ-B1: paths on the portal and https URLs on allowed hosts (exact port, `.domain` for subdomains) pass,
    and the value returned is the very string checked."""
    assert acceptable(target, browser=BROWSER, portal=PORTAL)


@pytest.mark.parametrize("target", REFUSED, ids=repr)
def test_refused_targets(target: str) -> None:
    """REQ-B1, REQ-B4: open-redirect payloads (slashes, backslashes, controls, dot segments, look-alikes,
    other schemes, userinfo, other hosts and ports, chained URLs in query values) are refused."""
    assert not acceptable(target, browser=BROWSER, portal=PORTAL)


def test_http_only_when_cookies_are_not_secure() -> None:
    """REQ-B1: plain http targets pass only in a local trial (cookie_secure off), and still only on allowed hosts."""
    local = Browser(cookie_name="gateway_session", cookie_secure=False, allowed_hosts=("app.local:8000",))
    assert acceptable("http://app.local:8000/x", browser=local, portal="http://127.0.0.1:8080")
    assert acceptable("http://127.0.0.1:8080/portal/sessions", browser=local, portal="http://127.0.0.1:8080")
    assert not acceptable("http://app.local/x", browser=local, portal="http://127.0.0.1:8080")
    assert not acceptable("http://127.0.0.1:8081/", browser=local, portal="http://127.0.0.1:8080")
    assert not acceptable("https://127.0.0.1:8080/", browser=local, portal="http://127.0.0.1:8080")


def test_checked_return_url_falls_back_to_the_default() -> None:
    """A missing or refused value becomes the default; a good one is returned unchanged; the portal's origin
    comes from `browser.public_url`, else from the mail links' origin."""
    settings = settings_from_mapping({"browser": {"public_url": "https://auth.good.com"}})
    assert portal_origin(settings) == "https://auth.good.com"
    assert checked_return_url(None, settings=settings, default="/home") == "/home"
    assert checked_return_url("//evil.com", settings=settings, default="/home") == "/home"
    assert checked_return_url("/app?x=1", settings=settings, default="/home") == "/app?x=1"
    fallback = settings_from_mapping({"mail": {"public_base_url": "https://www.good.com/"}})
    assert portal_origin(fallback) == "https://www.good.com"


def test_the_sign_in_url_carries_the_return_url_encoded() -> None:
    """The data plane sends browsers to the portal's origin with the return URL as one encoded `rd` value."""
    settings = settings_from_mapping({"browser": {"public_url": "https://auth.good.com"}})
    url = sign_in_url(settings, "https://app.good.com/a?b=1&c=2")
    assert url == "https://auth.good.com/portal/sign-in?rd=https%3A%2F%2Fapp.good.com%2Fa%3Fb%3D1%26c%3D2"
