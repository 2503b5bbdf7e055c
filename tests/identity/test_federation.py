"""Provider rules that need no network: email-domain rules, and which issuers an authorization response may
name (RFC 9207) for the Google and Entra presets."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.identity.federation.common import ProviderRefused, email_domain_ok
from gateway.identity.federation.oidc import OidcProvider
from gateway.identity.jwks import ProviderMetadata
from gateway.settings import GOOGLE_ISSUER, IdentityProvider


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("ann@corp.example", True),
        ("ann@CORP.example", True),
        ("ann@evil.example@corp.example", False),
        ("ann@corp.example@evil.example", False),
        ("corp.example", False),
        ("@corp.example", False),
        ("ann@xcorp.example", False),
        ("ann@sub.corp.example", False),
    ],
)
def test_email_domain_rules_need_exactly_one_at(email: str, ok: bool) -> None:
    """An address passes a domain rule only with exactly one `@` and exactly the domain (REQ-B19,
    CVE-2026-40574)."""
    assert email_domain_ok(email, ("corp.example",)) is ok


async def test_google_accepts_both_issuer_forms_and_no_other() -> None:
    """Google's authorization response and ID token may name `https://accounts.google.com` or
    `accounts.google.com`; anything else is refused (REQ-B17)."""
    config = IdentityProvider(name="google", kind="google", client_id="c", client_secret="s")
    async with aiohttp.ClientSession() as http:
        provider = OidcProvider(config, "s", "https://gw.example/cb", http)
        metadata = ProviderMetadata(issuer=GOOGLE_ISSUER, jwks_uri="https://www.googleapis.com/oauth2/v3/certs")
        provider.check_response_issuer(metadata, "https://accounts.google.com")
        provider.check_response_issuer(metadata, "accounts.google.com")
        provider.check_response_issuer(metadata, None)
        with pytest.raises(ProviderRefused):
            provider.check_response_issuer(metadata, "https://accounts.google.com.evil.example")


async def test_entra_multi_tenant_response_issuer_names_an_allowed_tenant() -> None:
    """A multi-tenant Entra response's `iss` must be the authority's template with an allowed tenant."""
    config = IdentityProvider(
        name="ms", kind="entra", client_id="c", client_secret="s", tenant="organizations", allowed_tenants=("t1",)
    )
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    async with aiohttp.ClientSession() as http:
        provider = OidcProvider(config, "s", "https://gw.example/cb", http)
        metadata = ProviderMetadata(issuer=template, jwks_uri="https://login.microsoftonline.com/keys")
        provider.check_response_issuer(metadata, "https://login.microsoftonline.com/t1/v2.0")
        for wrong in ("https://login.microsoftonline.com/t2/v2.0", "https://evil.example/t1/v2.0"):
            with pytest.raises(ProviderRefused):
                provider.check_response_issuer(metadata, wrong)


def test_authlib_and_httpx2_load_only_when_a_provider_is_used() -> None:
    """The control plane's modules import neither Authlib nor httpx2: a gateway without identity providers never
    loads them (they are imported when a provider is first used)."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.app, gateway.api.auth.providers, gateway.manage.signin; "
        "print('authlib' in sys.modules, 'httpx2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)  # noqa: S603
    assert done.stdout.split() == ["False", "False"]
