"""What every outside provider's protocol shares: the redirect URI, the OAuth client (Authlib's, over httpx2) and
how its failures become problems, and what an address must be to be used.

Authlib does the protocol (authorization URL with PKCE S256, code redemption with client authentication, token
response parsing); the gateway does what Authlib's client leaves out or does differently: the server-side state,
the RFC 9207 `iss` check, ID token validation with throttled keys (jwks.py), and every decision about accounts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from gateway.errors import Unprocessable
from gateway.identity.accounts import normalise_email
from gateway.identity.federation import HTTP_TIMEOUT
from gateway.identity.federation.problems import (
    IdTokenRejected,
    ProviderRefused,
    ProviderTimeout,
    ProviderUnavailable,
)

__all__ = [
    "MAX_SUBJECT",
    "IdTokenRejected",
    "ProviderRefused",
    "ProviderTimeout",
    "ProviderUnavailable",
    "email_domain_ok",
    "oauth_client",
    "provider_call",
    "public_base",
    "redirect_uri",
    "usable_email",
]
from gateway.settings import IdentityProvider, Settings


def public_base(settings: Settings) -> str:
    return (settings.browser.public_url or settings.mail.public_base_url).rstrip("/")


def redirect_uri(settings: Settings, provider: IdentityProvider) -> str:
    """One redirect URI per provider (RFC 9700 §2.1, mix-up defence): `{public base}/auth/providers/{name}/callback`."""
    return f"{public_base(settings)}/auth/providers/{provider.name}/callback"


def oauth_client(
    provider: IdentityProvider, secret: str, redirect: str, scopes: tuple[str, ...], *, auth_method: str
) -> AsyncOAuth2Client:
    """Authlib's OAuth 2.0 client for one exchange: PKCE S256, no redirects followed, HTTP_TIMEOUT per call."""
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=secret,
        scope=" ".join(scopes),
        redirect_uri=redirect,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
    )


@asynccontextmanager
async def provider_call(what: str) -> AsyncIterator[None]:
    """Turn a failed call to the provider into a problem: a timeout 504, an unreachable or failing provider 502,
    an OAuth error answer (a refused or spent code) 403. Never the response body, never a secret."""
    try:
        yield
    except OAuthError as exc:
        raise ProviderRefused(f"{what}: the provider refused ({exc.error or 'error'})") from exc
    except httpx2.TimeoutException as exc:
        raise ProviderTimeout(f"{what}: the provider did not answer within {HTTP_TIMEOUT:g} s") from exc
    except (httpx2.HTTPError, ValueError) as exc:
        raise ProviderUnavailable(f"{what}: the provider is unreachable or failed; try again later") from exc


def usable_email(value: object) -> str | None:
    """A provider's address as the accounts table keeps it (trimmed, lower-cased, one `@`, at most 320
    characters), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return normalise_email(value)
    except Unprocessable:
        return None


MAX_SUBJECT = 255
"""Longest stable id kept for an identity (OIDC allows `sub` up to 255 ASCII characters)."""


def email_domain_ok(email: str, domains: tuple[str, ...]) -> bool:
    """Whether `email` (exactly one `@`, REQ-B19) is at one of `domains` (exact, lower-case)."""
    if email.count("@") != 1:
        return False
    local, domain = email.rsplit("@", 1)
    return bool(local) and domain.lower() in domains
