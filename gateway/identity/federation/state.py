"""The sign-in state between a provider's start and its callback: stored on the server, single-use, ten minutes,
bound to the browser that started it (REQ-B12).

`state` (256 random bits) goes to the provider and comes back; only its SHA-256 is stored. The browser holds a
login cookie (HttpOnly, SameSite=Lax so that the provider's redirect back carries it) whose SHA-256 must match the
stored row: a state copied into another browser, replayed, or older than ten minutes is refused (403) before the
code is redeemed. The nonce and the PKCE verifier never leave the server except to the provider.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import LoginState, utcnow
from gateway.errors import Forbidden
from gateway.settings import Browser

STATE_TTL = dt.timedelta(minutes=10)
"""How long a started sign-in may take at the provider."""
COOKIE_SECURE_NAME = "__Host-gateway_login"
COOKIE_PLAIN_NAME = "gateway_login"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class StateRejected(Forbidden):
    """The callback's `state` is unknown, spent, expired, for another provider or from another browser."""

    slug = "login-state-invalid"
    title = "Sign-in state invalid"


@dataclass(frozen=True, slots=True)
class Started:
    """What a new sign-in sends: `state` and `nonce` to the provider (with the verifier's S256 challenge), and the
    browser cookie's value (unchanged when the browser already had one)."""

    state: str
    nonce: str
    code_verifier: str
    browser: str


def cookie_name(browser: Browser) -> str:
    return COOKIE_SECURE_NAME if browser.cookie_secure else COOKIE_PLAIN_NAME


def cookie_header(browser: Browser, value: str) -> str:
    """Set-Cookie for the login cookie: host-only, Path=/, HttpOnly, SameSite=Lax, Secure unless configured off."""
    parts = [f"{cookie_name(browser)}={value}", f"Max-Age={int(STATE_TTL.total_seconds())}", "Path=/", "HttpOnly"]
    parts.append("SameSite=Lax")
    if browser.cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def open_state(
    db: AsyncSession,
    provider: str,
    *,
    browser: str | None,
    link_user_id: str | None = None,
    return_to: str | None = None,
) -> Started:
    """Store a new sign-in for `provider`; `browser` is the login cookie the request carried (reused, so that two
    tabs signing in at once both finish), or None for a new one. Expired rows are deleted on the way."""
    now = utcnow()
    await db.execute(delete(LoginState).where(LoginState.expires_at < now))
    cookie = browser if browser is not None and _TOKEN_RE.match(browser) else new_token()
    started = Started(
        state=new_token(), nonce=new_token(), code_verifier=new_token() + new_token()[:21], browser=cookie
    )
    db.add(
        LoginState(
            state_hash=_digest(started.state),
            browser_hash=_digest(cookie),
            provider=provider,
            nonce=started.nonce,
            code_verifier=started.code_verifier,
            link_user_id=link_user_id,
            return_to=return_to,
            created_at=now,
            expires_at=now + STATE_TTL,
        )
    )
    await db.flush()
    return started


async def claim_state(db: AsyncSession, provider: str, *, state: str | None, browser: str | None) -> LoginState:
    """Spend the sign-in `state` names, once: it must be live, for `provider`, and started by this browser; else
    StateRejected. The claim is committed at once, so a later failure (the provider down) cannot make it usable
    again."""
    if not state or not browser or len(state) > 128:
        raise StateRejected("the sign-in link is invalid or was used already; start again")
    now = utcnow()
    claimed = await db.execute(
        update(LoginState)
        .where(
            LoginState.state_hash == _digest(state),
            LoginState.provider == provider,
            LoginState.used_at.is_(None),
            LoginState.expires_at > now,
        )
        .values(used_at=now)
    )
    row = await db.scalar(select(LoginState).where(LoginState.state_hash == _digest(state)))
    await db.commit()
    if claimed.rowcount != 1 or row is None:  # type: ignore[attr-defined]
        raise StateRejected("the sign-in link is invalid, expired or was used already; start again")
    # Spent even when the browser is wrong: a state seen by someone else is never good again.
    if not hmac.compare_digest(row.browser_hash, _digest(browser)):
        raise StateRejected("this sign-in was started in another browser; start again")
    return row
