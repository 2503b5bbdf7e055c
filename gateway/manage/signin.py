"""Signing in through an outside provider, start to tokens; the API's /auth/providers and the portal share it.

start     a server-side state (identity/federation/state.py), then the provider's authorization URL (PKCE
          S256, nonce)
complete  the state claimed (403 if bad, before any call to the provider), the code redeemed and the person
          proved (oidc.py, github.py), the user found, linked or created (linking.py), the claims mapping
          applied (manage/claims.py), then what a password login ends with: tokens, or an MFA challenge
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.audit import write_event
from gateway.db.models import User
from gateway.identity import accounts, sessions
from gateway.identity.federation import Federation, linking
from gateway.identity.federation.problems import ProviderRefused
from gateway.identity.federation.state import claim_state, open_state
from gateway.identity.tokens import TokenService
from gateway.manage import claims

_ERROR_RE = re.compile(r"^[a-z_]{1,64}$")


async def start(
    db: AsyncSession,
    federation: Federation,
    name: str,
    *,
    browser: str | None,
    link_user_id: str | None = None,
    return_to: str | None = None,
) -> tuple[str, str]:
    """Begin a sign-in (or, with `link_user_id`, the linking of the provider to that signed-in user): the URL to
    send the browser to, and the login cookie's value to set."""
    provider = federation.get(name)
    started = await open_state(db, name, browser=browser, link_user_id=link_user_id, return_to=return_to)
    url = await provider.authorization_url(
        state=started.state, nonce=started.nonce, code_verifier=started.code_verifier
    )
    return url, started.browser


@dataclass(frozen=True, slots=True)
class Completed:
    """How a callback ended: `result` is what a password login answers (None when this was a linking), with the
    user, whether the account was made or the identity attached now, and the start's `return_to`."""

    result: sessions.TokenPair | accounts.MfaRequired | User | None
    """A User when the sign-in was started from the portal (`browser_sessions`): the portal opens its session."""
    user_id: str
    created: bool
    linked: bool
    return_to: str | None


async def complete(
    db: AsyncSession,
    federation: Federation,
    tokens: TokenService,
    name: str,
    params: Mapping[str, str],
    *,
    browser: str | None,
    client: sessions.Client,
    browser_sessions: bool = False,
) -> Completed:
    """Finish a sign-in at the callback (see the module docstring). Nothing is created unless every check
    passed: a failure after the state is spent rolls the rest back."""
    provider = federation.get(name)
    login = await claim_state(db, name, state=params.get("state"), browser=browser)
    error = params.get("error")
    if error is not None:
        shown = error if _ERROR_RE.match(error) else "error"
        raise ProviderRefused(f"the provider refused the sign-in ({shown})")
    person = await provider.redeem(params, nonce=login.nonce, code_verifier=login.code_verifier)
    resolved = await linking.resolve(
        db, person, allow_signup=provider.config.allow_signup, link_user_id=login.link_user_id
    )
    user = resolved.user
    await claims.apply(db, provider.config, user, person.claims)
    result: sessions.TokenPair | accounts.MfaRequired | User | None = None
    if login.link_user_id is None:
        if browser_sessions and login.return_to is not None:  # started from the portal: a browser session
            result = await accounts.unless_mfa(db, user, client)
        else:
            result = await accounts.sign_in(db, tokens, user, client)
    action = "user.identity.link_confirmed" if login.link_user_id is not None else "user.login.provider"
    write_event(
        db,
        f"user:{user.id}",
        action,
        target=user.id,
        after={
            "provider": name,
            "created": resolved.created,
            "linked": resolved.linked,
            "mfa": isinstance(result, accounts.MfaRequired),
        },
    )
    return Completed(
        result=result, user_id=user.id, created=resolved.created, linked=resolved.linked, return_to=login.return_to
    )
