"""Browser sessions for tests: the settings of a gateway with `[browser]` on, and session cookies minted as the
portal's sign-in does (a session row, then `issue_session_cookie`)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.db.models import Session
from gateway.identity import sessions
from gateway.identity.tokens import ALGORITHM, SESSION_COOKIE_TYP
from gateway.manage import members
from gateway.settings import Settings
from tests.conftest import Gateway, gateway_settings

PORTAL = "https://auth.example.com"
COOKIE = "__Host-gateway_session"
ALLOWED_ORIGIN = "https://app.example.com"


def browser_settings(db_url: str, upstream_url: str, **overrides: Any) -> Settings:
    """`/app` accepts the cookie and bearer tokens (org from the path), `/api` tokens and keys only, `/named`
    the cookie only with email and name among its identity headers."""
    routes = [
        {"prefix": "/app", "upstream": upstream_url, "auth": ["cookie", "bearer"], "org_from": "path"},
        {"prefix": "/api", "upstream": upstream_url},
        {
            "prefix": "/named",
            "upstream": upstream_url,
            "auth": ["cookie"],
            "org_from": "path",
            "identity_headers": ["user", "email", "name", "org"],
        },
    ]
    browser = {"enabled": True, "public_url": PORTAL, "allowed_origins": [ALLOWED_ORIGIN]}
    raw: dict[str, Any] = {"routes": routes, "browser": browser, **overrides}
    return gateway_settings(db_url, upstream_url, **raw)


@dataclass(frozen=True)
class Minted:
    value: str
    session_id: str
    user_id: str

    @property
    def header(self) -> dict[str, str]:
        return {"Cookie": f"theme=dark; {COOKIE}={self.value}; lang=en"}


async def sign_in(gateway: Gateway, email: str, *, issued_ago: int = 0) -> Minted:
    """Start a session for `email` and mint its cookie, as the portal does; `issued_ago` back-dates the cookie
    (signed with the gateway's own key, as a cookie issued that long ago was)."""
    tokens = gateway.runtime.services.tokens
    async with gateway.runtime.services.sessions() as db:
        user = await members.find_user(db, email=email)
        pair = await sessions.start(db, tokens, user.id, sessions.Client(ip="127.0.0.1"))
        row = await db.get(Session, pair.session_id)
        assert row is not None
        not_after = row.expires_at.timestamp()
        await db.commit()
    idle = gateway.runtime.settings.browser.idle_seconds
    if not issued_ago:
        value, _ = tokens.issue_session_cookie(
            user.id, session_id=pair.session_id, auth_time=int(time.time()), idle_seconds=idle, not_after=not_after
        )
        return Minted(value, pair.session_id, user.id)
    now = int(time.time())
    claims = {
        "iss": tokens.settings.issuer,
        "aud": tokens.settings.audience,
        "sub": user.id,
        "iat": now - issued_ago,
        "exp": now - issued_ago + idle,
        "jti": secrets.token_urlsafe(12),
        "auth_time": now - issued_ago,
        "sid": pair.session_id,
        "nat": int(not_after),
    }
    ring = tokens.ring
    value = jwt.encode(
        claims,
        ring.private_keys[ring.active_kid],
        algorithm=ALGORITHM,
        headers={"kid": ring.active_kid, "typ": SESSION_COOKIE_TYP},
    )
    return Minted(value, pair.session_id, user.id)
