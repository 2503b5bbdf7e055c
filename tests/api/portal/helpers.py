"""A gateway with the sign-in portal on, and a small cookie-keeping HTTP client that acts like a browser."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import aiohttp
import pyotp
from multidict import CIMultiDictProxy
from sqlalchemy import select

from gateway.api.portal.guard import form_token
from gateway.db.models import User
from gateway.identity import mfa
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving

LOCAL_BROWSER = {"enabled": True, "cookie_name": "gateway_session", "cookie_secure": False, "product_name": "Acme"}
"""A portal for plain-HTTP tests: a `__Host-` cookie needs HTTPS, so the names are unprefixed here."""
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def set_cookies(self) -> list[str]:
        return self.headers.getall("set-cookie", [])

    def csrf(self, index: int = 0) -> str:
        return str(_CSRF.findall(self.text)[index])


@dataclass
class Browserish:
    """Keeps cookies by name as a browser would (ignoring Path/Domain), and sends Origin and Sec-Fetch-Site."""

    http: aiohttp.ClientSession
    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def _remember(self, page: Page) -> None:
        for header in page.set_cookies():
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def token(self, form: str) -> str:
        """The CSRF token of `form` for this browser (as its pages carry it)."""
        secret = self.cookies.get("gateway_csrf") or self.cookies["__Host-gateway_csrf"]
        return form_token(secret, form)

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    async def get(self, path: str, **headers: str) -> Page:
        sent = {"Cookie": self.cookie_header(), "Sec-Fetch-Site": "none", **headers}
        async with self.http.get(self.base + path, headers=sent, allow_redirects=False) as response:
            page = Page(response.status, response.headers, await response.text())
        self._remember(page)
        return page

    async def post(self, path: str, form: dict[str, str], *, headers: dict[str, str] | None = None) -> Page:
        sent = {"Cookie": self.cookie_header(), "Origin": self.base, "Sec-Fetch-Site": "same-origin"}
        sent.update(headers or {})
        sent = {name: value for name, value in sent.items() if value != ""}
        async with self.http.post(self.base + path, data=form, headers=sent, allow_redirects=False) as response:
            page = Page(response.status, response.headers, await response.text())
        self._remember(page)
        return page

    async def sign_in(self, email: str, password: str, rd: str | None = None) -> Page:
        query = f"?rd={quote(rd, safe='')}" if rd is not None else ""
        await self.get("/portal/sign-in" + query)  # a browser already signed in is sent on: no form then
        form = {"csrf_token": self.token("sign-in"), "email": email, "password": password}
        if rd is not None:
            form["rd"] = rd
        return await self.post("/portal/sign-in", form)


@asynccontextmanager
async def portal_gateway(db_url: str, upstream: Upstream, tmp_path: Any, **browser: Any) -> AsyncIterator[Gateway]:
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), browser={**LOCAL_BROWSER, **browser}
    )
    async with serving(settings, upstream) as gateway:
        yield gateway


@asynccontextmanager
async def browserish(gateway: Gateway) -> AsyncIterator[Browserish]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Browserish(http=http, base=gateway.url)


async def enrol_totp(gateway: Gateway, email: str) -> tuple[str, list[str]]:
    """Turn TOTP on for `email` as the enrolment API would: (secret, backup codes)."""
    runtime = gateway.runtime
    async with runtime.services.sessions() as db:
        row = await db.scalar(select(User).where(User.email == email))
        assert row is not None
        secret, _ = await mfa.enrol(db, runtime.services.sealer, row)
        codes = await mfa.confirm(db, runtime.hasher, runtime.services.sealer, row, pyotp.TOTP(secret).now())
        assert codes is not None
        await db.commit()
    return secret, codes


def next_code(secret: str) -> str:
    """A TOTP code of a later step than the one enrolment spent (each step is accepted once)."""
    return pyotp.TOTP(secret).at(time.time() + 30)
