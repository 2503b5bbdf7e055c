"""The session cookie's Set-Cookie attributes and parsing."""

from __future__ import annotations

import time

from gateway.access.cookies import clearing_header, issuing_header, needs_refresh, read_cookie
from gateway.settings import Browser


def test_default_cookie_is_host_prefixed_secure_httponly_lax_without_domain() -> None:
    """REQ-B8: `__Host-` name, Secure, HttpOnly, SameSite=Lax, Path=/ and no Domain by default."""
    header = issuing_header(Browser(), "v", int(time.time()) + 60)
    parts = [part.strip() for part in header.split(";")]
    assert parts[0] == "__Host-gateway_session=v"
    assert {"Path=/", "HttpOnly", "SameSite=Lax", "Secure"} <= set(parts)
    assert not any(part.startswith("Domain") for part in parts)
    assert 55 <= int(next(p for p in parts if p.startswith("Max-Age="))[8:]) <= 60


def test_parent_domain_and_clearing() -> None:
    """A configured parent domain is named; the clearing cookie has the same name, path and domain, expired."""
    browser = Browser(cookie_name="__Secure-s", cookie_domain="example.com")
    assert "Domain=example.com" in issuing_header(browser, "v", int(time.time()) + 60)
    cleared = clearing_header(browser)
    assert cleared.startswith("__Secure-s=;") and "Max-Age=0" in cleared and "Domain=example.com" in cleared


def test_read_cookie_among_others_and_garbage() -> None:
    """The named cookie is found among others; absent or unparsable headers give None."""
    assert read_cookie("a=1; __Host-gateway_session=tok; b=2", "__Host-gateway_session") == "tok"
    assert read_cookie("a=1", "__Host-gateway_session") is None
    assert read_cookie(None, "x") is None
    assert read_cookie('x="unterminated', "x") is None


def test_refresh_slides_only_for_a_cookie_old_enough_and_a_session_not_ending() -> None:
    """A fresh cookie is kept; an old one is re-issued unless the session ends now."""
    browser = Browser(idle_seconds=3600)
    now = int(time.time())
    assert not needs_refresh(browser, now, now + 3600)
    assert needs_refresh(browser, now - 301, now + 3600)
    assert not needs_refresh(browser, now - 301, now)
