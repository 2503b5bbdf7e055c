"""The Google and Microsoft Entra presets against the real OpenID provider of the tests (which answers under
`/{tenant}/v2.0/` as Entra does): Entra's tenant-substituted issuer, tenant allow-list and `tid:oid` key, Google's
`hd` rule, and neither trusting an unverified email."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.db.models import ExternalIdentity
from tests.api.test_providers import begin, count, finish, idp, me
from tests.conftest import Gateway, Upstream, gateway_settings, load_system_policy, serving
from tests.identity.providers import OidcProvider

__all__ = ["idp"]  # the fixture, shared with test_providers

TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
CLIENT_ID = "gateway-client"


@pytest.fixture
async def presets(db_url: str, upstream: Upstream, tmp_path: Path, idp: OidcProvider) -> AsyncIterator[Gateway]:
    common = {"client_id": CLIENT_ID, "client_secret": "unused-here", "allow_signup": True}
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "audit.jsonl"),
        mail={"public_base_url": "http://gateway.test"},
        identity_providers=[
            {"name": "entra", "kind": "entra", "tenant": TENANT, "authority": idp.url, **common},
            {
                "name": "entra-multi",
                "kind": "entra",
                "tenant": "organizations",
                "allowed_tenants": [TENANT],
                "authority": idp.url,
                **common,
            },
            {"name": "google", "kind": "google", "issuer": idp.url, "hosted_domains": ["corp.example"], **common},
        ],
    )
    await load_system_policy(db_url)
    async with serving(settings, upstream) as gateway:
        yield gateway


def entra_claims(tenant: str, oid: str, email: str, **more: Any) -> dict[str, Any]:
    return {"iss": f"http://ISSUER/{tenant}/v2.0", "tid": tenant, "oid": oid, "email": email, **more}


async def sign_in(gateway: Gateway, idp: OidcProvider, name: str, sub: str, claims: dict[str, Any]) -> tuple[int, Any]:
    fixed = {
        key: value.replace("http://ISSUER", idp.url) if isinstance(value, str) else value
        for key, value in claims.items()
    }
    await idp.set_user(sub, fixed)
    url, cookie, _ = await begin(gateway, name)
    return await finish(gateway, await idp.authorize(url, sub), cookie)


async def test_entra_keys_people_on_tenant_and_object_id(presets: Gateway, idp: OidcProvider) -> None:
    """Entra (one tenant): the identity is `tid:oid`, not `sub`; an email marked verified by `xms_edov` may make
    the account (REQ-B16)."""
    status, answer = await sign_in(
        presets, idp, "entra", "pairwise-sub-1", entra_claims(TENANT, "oid-1", "wes@corp.example", xms_edov=True)
    )
    assert status == 200, answer
    assert (await me(presets, answer["access_token"]))["email"] == "wes@corp.example"
    async with presets.runtime.services.sessions() as session:
        (identity,) = await session.scalars(select(ExternalIdentity))
    assert identity.subject == f"{TENANT}:oid-1"


async def test_entra_never_trusts_an_unmarked_email(presets: Gateway, idp: OidcProvider) -> None:
    """nOAuth: an Entra `email` without `xms_edov` (even with `email_verified`) neither links to the user who has
    the address nor makes an account (REQ-B16)."""
    await presets.user("xena@corp.example")
    claims = entra_claims(TENANT, "oid-2", "xena@corp.example", email_verified=True)
    status, problem = await sign_in(presets, idp, "entra", "sub-2", claims)
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-email-unverified"
    assert await count(presets, ExternalIdentity) == 0


async def test_entra_multi_tenant_checks_the_issuer_with_the_tokens_tenant_and_the_allow_list(
    presets: Gateway, idp: OidcProvider
) -> None:
    """With `organizations`, `iss` must be the template with the token's own `tid` (else 403
    `id-token-rejected`), and that tenant must be allowed (else 403 `provider-refused`) (REQ-B16)."""
    mismatch = entra_claims(TENANT, "oid-3", "yuri@corp.example", xms_edov=True)
    mismatch["tid"] = OTHER_TENANT
    status, problem = await sign_in(presets, idp, "entra-multi", "sub-3", mismatch)
    assert status == 403 and problem["type"] == "urn:gateway:problem:id-token-rejected"
    stranger = entra_claims(OTHER_TENANT, "oid-4", "zoe@other.example", xms_edov=True)
    status, problem = await sign_in(presets, idp, "entra-multi", "sub-4", stranger)
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-refused"
    allowed = entra_claims(TENANT, "oid-5", "amy@corp.example", xms_edov=True)
    status, answer = await sign_in(presets, idp, "entra-multi", "sub-5", allowed)
    assert status == 200, answer


async def test_google_checks_the_hosted_domain_claim(presets: Gateway, idp: OidcProvider) -> None:
    """Google with `hosted_domains`: an ID token whose `hd` is another domain, or absent (a consumer account), is
    refused; the configured one passes (REQ-B17)."""
    base = {"email": "ben@corp.example", "email_verified": True}
    status, problem = await sign_in(presets, idp, "google", "g-1", {**base, "hd": "other.example"})
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-refused"
    status, problem = await sign_in(presets, idp, "google", "g-2", base)
    assert status == 403
    status, answer = await sign_in(presets, idp, "google", "g-3", {**base, "hd": "corp.example"})
    assert status == 200, answer
