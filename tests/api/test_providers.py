"""Signing in through outside providers, end to end: a real OpenID Connect provider (oidc-provider-mock, its own
keys, on an ephemeral port) and a stand-in speaking GitHub's OAuth and API shapes, in front of a real gateway."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select, update

from gateway.db.models import AuditRecord, ExternalIdentity, LoginState, Membership, Organization, User
from tests.conftest import PASSWORD, Gateway, Upstream, gateway_settings, load_system_policy, serving
from tests.identity.providers import (
    GitHubStandIn,
    GitHubUser,
    OidcProvider,
    callback_target,
    github_standin,
    oidc_provider,
    query_of,
)

PUBLIC = "http://gateway.test"
CLIENT_ID = "gateway-client"
COOKIE = "__Host-gateway_login"
GH_CLIENT, GH_SECRET = "gh-client-id", "gh-client-secret-value"


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    async with oidc_provider() as provider:
        yield provider


@pytest.fixture
async def hub() -> AsyncIterator[GitHubStandIn]:
    async with github_standin(GH_CLIENT, GH_SECRET) as standin:
        yield standin


def providers(idp: OidcProvider, hub: GitHubStandIn, secret_file: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": "corp",
            "display_name": "Corp SSO",
            "issuer": idp.url,
            "client_id": CLIENT_ID,
            "client_secret_env": "GW_TEST_CORP_SECRET",
            "allow_signup": True,
            "memberships": [
                {"claim": "groups", "value": "eng", "org": "acme", "role": "member"},
                {"claim": "groups", "value": "ops", "org": "beta", "role": "admin"},
            ],
        },
        {"name": "strict", "issuer": idp.url, "client_id": CLIENT_ID, "client_secret": "not-a-real-secret"},
        {
            "name": "gh",
            "kind": "github",
            "client_id": GH_CLIENT,
            "client_secret_file": str(secret_file),
            "github_url": hub.url,
            "github_api_url": hub.api,
            "allow_signup": True,
            "memberships": [{"claim": "teams", "value": "Acme-GH/platform", "org": "acme", "role": "admin"}],
        },
    ]


@pytest.fixture
async def fed(
    db_url: str,
    upstream: Upstream,
    tmp_path: Path,
    idp: OidcProvider,
    hub: GitHubStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Gateway]:
    """A gateway whose public base is PUBLIC, with the providers above (orgs acme and beta exist)."""
    monkeypatch.setenv("GW_TEST_CORP_SECRET", "corp-client-secret")
    secret_file = tmp_path / "gh-secret"
    secret_file.write_text(GH_SECRET + "\n")
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "audit.jsonl"),
        mail={"public_base_url": PUBLIC},
        identity_providers=providers(idp, hub, secret_file),
    )
    await load_system_policy(db_url)
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.org("beta")
        yield gateway


async def begin(gateway: Gateway, name: str, *, cookie: str | None = None) -> tuple[str, str, str]:
    """GET start: (the provider's authorization URL, the login cookie's value, the whole Set-Cookie)."""
    headers = {"cookie": f"{COOKIE}={cookie}"} if cookie else {}
    status, answer, body = await gateway.call(
        "GET", f"/auth/providers/{name}/start", headers=headers, allow_redirects=False
    )
    assert status == 302, body
    set_cookie = answer["set-cookie"]
    value = set_cookie.split(";", 1)[0].split("=", 1)[1]
    return answer["location"], value, set_cookie


async def finish(gateway: Gateway, location: str, cookie: str | None, token: str | None = None) -> tuple[int, Any]:
    headers = {"cookie": f"{COOKIE}={cookie}"} if cookie else {}
    status, _, body = await gateway.call("GET", callback_target(location), headers=headers, token=token)
    return status, json.loads(body)


async def sign_in(gateway: Gateway, idp: OidcProvider, sub: str, name: str = "corp") -> tuple[int, Any]:
    url, cookie, _ = await begin(gateway, name)
    return await finish(gateway, await idp.authorize(url, sub), cookie)


async def me(gateway: Gateway, token: str) -> dict[str, Any]:
    status, _, body = await gateway.call("GET", "/auth/me", token=token)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def count(gateway: Gateway, model: Any, *where: Any) -> int:
    async with gateway.runtime.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def events(gateway: Gateway, action: str) -> list[AuditRecord]:
    async with gateway.runtime.services.sessions() as session:
        return list(await session.scalars(select(AuditRecord).where(AuditRecord.action == action)))


def verified(email: str, **claims: Any) -> dict[str, Any]:
    return {"email": email, "email_verified": True, "name": email.split("@")[0].title(), **claims}


# -- configuration and the authorization request ------------------------------------------------------------


async def test_the_provider_list_names_each_provider_and_no_secret(fed: Gateway) -> None:
    """GET /auth/providers is public and lists name, display name, kind and start URL; never a secret."""
    status, _, body = await fed.call("GET", "/auth/providers")
    assert status == 200
    listed = json.loads(body)
    assert [(item["name"], item["kind"]) for item in listed] == [("corp", "oidc"), ("strict", "oidc"), ("gh", "github")]
    assert listed[0] == {
        "name": "corp",
        "display_name": "Corp SSO",
        "kind": "oidc",
        "start_url": "/auth/providers/corp/start",
    }
    assert b"secret" not in body


async def test_start_redirects_with_pkce_s256_a_nonce_a_fresh_state_and_one_redirect_uri(
    fed: Gateway, idp: OidcProvider
) -> None:
    """The authorization request carries PKCE S256, a nonce, a 256-bit state and this provider's own redirect URI
    (REQ-B13, REQ-B14); the login cookie is HttpOnly, Secure, SameSite=Lax, host-only, ten minutes (REQ-B12)."""
    url, cookie, set_cookie = await begin(fed, "corp")
    assert url.startswith(idp.url + "/oauth2/authorize?")
    query = query_of(url)
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["nonce"]) >= 43 and len(query["state"]) >= 43
    assert query["redirect_uri"] == f"{PUBLIC}/auth/providers/corp/callback"
    assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    assert set_cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=600"):
        assert attribute in set_cookie
    assert "Domain" not in set_cookie
    second, again, _ = await begin(fed, "corp", cookie=cookie)
    assert again == cookie, "a browser keeps its login cookie: two tabs can sign in at once"
    assert query_of(second)["state"] != query["state"]


async def test_an_unknown_provider_is_404(fed: Gateway) -> None:
    """Start and callback of a provider that is not configured: 404, nothing stored."""
    for path in ("/auth/providers/nope/start", "/auth/providers/nope/callback?state=x&code=y"):
        status, _, _ = await fed.call("GET", path, allow_redirects=False)
        assert status == 404
    assert await count(fed, LoginState) == 0


# -- the callback ---------------------------------------------------------------------------------------------


async def test_a_first_sign_in_creates_the_user_and_the_second_reuses_it(fed: Gateway, idp: OidcProvider) -> None:
    """With sign-up allowed, an unknown person with a verified email becomes a user (no password) and gets what
    a password login gives; signing in again finds them by the provider's `sub`, even with a new address. Each
    sign-in is a session in the session list, and audited."""
    await idp.set_user("alice-sub", verified("alice@corp.example"))
    status, first = await sign_in(fed, idp, "alice-sub")
    assert status == 200, first
    assert set(first) >= {"access_token", "refresh_token", "expires_in"}
    user = await me(fed, first["access_token"])
    assert user["email"] == "alice@corp.example"
    async with fed.runtime.services.sessions() as session:
        row = await session.get(User, user["id"])
        assert row is not None and row.password_hash is None and row.email_verified_at is not None
    await idp.set_user("alice-sub", verified("alice.new@corp.example"))
    status, second = await sign_in(fed, idp, "alice-sub")
    assert status == 200, second
    assert (await me(fed, second["access_token"]))["id"] == user["id"]
    assert await count(fed, User) == 1
    assert await count(fed, ExternalIdentity, ExternalIdentity.subject == "alice-sub") == 1
    status, _, body = await fed.call("GET", "/auth/sessions", token=second["access_token"])
    assert status == 200 and len(json.loads(body)) == 2
    logins = await events(fed, "user.login.provider")
    assert [json.loads(event.detail)["after"]["created"] for event in logins] == [True, False]
    assert all(event.target == user["id"] for event in logins)
    assert len(await events(fed, "user.signup")) == 1


async def test_a_verified_email_links_the_existing_user(fed: Gateway, idp: OidcProvider) -> None:
    """An address the provider verified finds the user who has it (even where sign-up is off): the identity is
    linked to them and they are signed in as themselves."""
    bob = await fed.user("bob@corp.example")
    await idp.set_user("bob-sub", verified("Bob@Corp.example"))
    status, answer = await sign_in(fed, idp, "bob-sub", name="strict")
    assert status == 200, answer
    assert (await me(fed, answer["access_token"]))["id"] == bob
    assert await count(fed, ExternalIdentity, ExternalIdentity.user_id == bob) == 1
    (linked,) = await events(fed, "user.identity.link")
    assert json.loads(linked.detail)["after"]["through"] == "verified-email"


@pytest.mark.parametrize("provider", ["corp", "strict"])
async def test_an_unverified_email_neither_links_nor_creates(fed: Gateway, idp: OidcProvider, provider: str) -> None:
    """An address the provider did not verify is never used: not to find the user who has it, not to make a new
    one (sign-up allowed or not): 403 `provider-email-unverified`, nothing stored."""
    await fed.user("carol@corp.example")
    await idp.set_user("mallory-sub", {"email": "carol@corp.example", "email_verified": False})
    status, problem = await sign_in(fed, idp, "mallory-sub", name=provider)
    assert status == 403
    assert problem["type"] == "urn:gateway:problem:provider-email-unverified"
    await idp.set_user("nobody-sub", {"email": "new@corp.example"})
    status, problem = await sign_in(fed, idp, "nobody-sub", name=provider)
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-email-unverified"
    assert await count(fed, ExternalIdentity) == 0
    assert await count(fed, User) == 1


async def test_an_account_whose_own_address_was_never_confirmed_is_not_linked(fed: Gateway, idp: OidcProvider) -> None:
    """Someone who registered the address first (never confirming it) does not get its owner's provider
    sign-in: 403, no link."""
    status, _, _ = await fed.call(
        "POST", "/auth/register", json={"email": "dana@corp.example", "password": "a squatter's own password"}
    )
    assert status in (200, 202)
    await idp.set_user("dana-sub", verified("dana@corp.example"))
    status, problem = await sign_in(fed, idp, "dana-sub")
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-email-unverified"
    assert await count(fed, ExternalIdentity) == 0


async def test_without_sign_up_an_unknown_person_is_refused_clearly(fed: Gateway, idp: OidcProvider) -> None:
    """A provider with `allow_signup = false` (the default) refuses a person nobody here is: 403
    `signup-disabled`, no user made."""
    await idp.set_user("erin-sub", verified("erin@corp.example"))
    status, problem = await sign_in(fed, idp, "erin-sub", name="strict")
    assert status == 403
    assert problem["type"] == "urn:gateway:problem:signup-disabled"
    assert await count(fed, User) == 0


async def test_a_user_with_a_second_factor_gets_the_mfa_challenge(fed: Gateway, idp: OidcProvider) -> None:
    """The callback ends as a password login does: a user with TOTP gets only the MFA challenge, which POST
    /auth/login/mfa turns into tokens."""
    await fed.user("frank@corp.example")
    token = await fed.login("frank@corp.example")
    status, _, body = await fed.call("POST", "/auth/mfa/totp", token=token)
    secret = json.loads(body)["secret"]
    status, _, body = await fed.call(
        "POST", "/auth/mfa/totp/confirm", token=token, json={"code": pyotp.TOTP(secret).now()}
    )
    assert status == 200, body
    await idp.set_user("frank-sub", verified("frank@corp.example"))
    status, answer = await sign_in(fed, idp, "frank-sub")
    assert status == 200, answer
    assert answer["mfa_required"] is True and "access_token" not in answer
    code = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    status, _, body = await fed.call("POST", "/auth/login/mfa", json={"mfa_token": answer["mfa_token"], "code": code})
    assert status == 200, body


# -- state, nonce, iss and the ID token ----------------------------------------------------------------------


async def test_a_replayed_or_forged_state_is_refused_before_any_token_call(fed: Gateway, idp: OidcProvider) -> None:
    """The state is single-use and bound to the browser that started it: a replay, a forged state, no login
    cookie, another browser's cookie, or an expired state is 403 `login-state-invalid` and the provider's token
    endpoint is never called (REQ-B12)."""
    await idp.set_user("gina-sub", verified("gina@corp.example"))
    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "gina-sub")
    status, _ = await finish(fed, location, cookie)
    assert status == 200
    calls = idp.token_calls
    status, problem = await finish(fed, location, cookie)
    assert status == 403 and problem["type"] == "urn:gateway:problem:login-state-invalid"

    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "gina-sub")
    state = query_of(location)["state"]
    forged = location.replace(state, state[:-2] + ("AA" if not state.endswith("AA") else "BB"))
    assert (await finish(fed, forged, cookie))[0] == 403
    assert (await finish(fed, location, None))[0] == 403, "no login cookie"
    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "gina-sub")
    _, stranger, _ = await begin(fed, "corp")
    assert (await finish(fed, location, stranger))[0] == 403, "another browser's cookie"
    assert (await finish(fed, location, cookie))[0] == 403, "a state seen with a wrong cookie is spent"

    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "gina-sub")
    async with fed.runtime.services.sessions() as session:
        await session.execute(update(LoginState).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        await session.commit()
    assert (await finish(fed, location, cookie))[0] == 403, "expired"
    assert idp.token_calls == calls


async def test_a_state_is_for_its_own_provider_only(fed: Gateway, idp: OidcProvider) -> None:
    """A state started for one provider is refused at another's callback (mix-up: one redirect URI each)."""
    await idp.set_user("hank-sub", verified("hank@corp.example"))
    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "hank-sub")
    status, problem = await finish(fed, location.replace("/providers/corp/", "/providers/strict/"), cookie)
    assert status == 403 and problem["type"] == "urn:gateway:problem:login-state-invalid"


CLAIM_FAILURES: dict[str, dict[str, Any]] = {
    "wrong-aud": {"aud": "another-client"},
    "extra-aud": {"aud": [CLIENT_ID, "someone-else"]},
    "wrong-azp": {"azp": "another-client"},
    "wrong-iss": {"iss": "http://127.0.0.1:1/evil"},
    "expired": {"exp": 1_000_000_000, "iat": 999_999_000},
    "issued-in-the-future": {"iat": 4_000_000_000, "exp": 4_000_000_600},
    "wrong-nonce": {"nonce": "not-the-nonce-we-sent"},
}


@pytest.mark.parametrize("case", sorted(CLAIM_FAILURES))
async def test_an_id_token_failing_a_claim_check_is_refused(fed: Gateway, idp: OidcProvider, case: str) -> None:
    """ID tokens signed by the provider's own key but with a wrong `aud`, an untrusted extra audience, a wrong
    `azp`, `iss` or nonce, expired or issued in the future: 403 `id-token-rejected`, no user (REQ-B13, REQ-B15)."""
    await idp.set_user("ivan-sub", {**verified("ivan@corp.example"), **CLAIM_FAILURES[case]})
    status, problem = await sign_in(fed, idp, "ivan-sub")
    assert status == 403, problem
    assert problem["type"] == "urn:gateway:problem:id-token-rejected"
    assert await count(fed, User) == 0


async def test_a_subject_too_long_to_keep_or_an_email_that_is_not_one_is_not_used(
    fed: Gateway, idp: OidcProvider
) -> None:
    """A `sub` over 255 characters is refused rather than cut (two people must never share a key); a verified
    "email" with two `@` is no address: it neither finds nor makes an account."""
    long_sub = "s" * 256
    await idp.set_user(long_sub, verified("long@corp.example"))
    status, problem = await sign_in(fed, idp, long_sub)
    assert status == 403 and problem["type"] == "urn:gateway:problem:id-token-rejected"
    await fed.user("boss@corp.example")
    await idp.set_user("odd-sub", {"email": "x@evil.example@corp.example", "email_verified": True})
    status, problem = await sign_in(fed, idp, "odd-sub")
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-email-unverified"
    assert await count(fed, ExternalIdentity) == 0


@pytest.mark.parametrize("forge", ["other-key", "alg-none", "hs256"])
async def test_an_id_token_not_signed_by_the_providers_key_is_refused(
    fed: Gateway, idp: OidcProvider, forge: str
) -> None:
    """An ID token signed by another key (with the provider's kid), unsigned (`alg: none`) or HMAC-signed is
    refused: 403 `id-token-rejected`, no user (REQ-B15)."""
    await idp.set_user("judy-sub", verified("judy@corp.example"))
    idp.forge = forge
    status, problem = await sign_in(fed, idp, "judy-sub")
    assert status == 403, problem
    assert problem["type"] == "urn:gateway:problem:id-token-rejected"
    assert await count(fed, User) == 0


async def test_the_authorization_responses_iss_is_checked_before_the_code_is_redeemed(
    fed: Gateway, idp: OidcProvider
) -> None:
    """RFC 9207 (REQ-B14, REQ-B23): an `iss` parameter naming another issuer is refused before the token call;
    while discovery advertises the parameter a response without it is refused too; the right one passes."""
    await idp.set_user("kim-sub", verified("kim@corp.example"))
    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "kim-sub")
    status, problem = await finish(fed, location + "&iss=http%3A%2F%2F127.0.0.1%3A1", cookie)
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-refused"
    assert idp.token_calls == 0

    idp.advertise_iss = True
    async with serving(fed.runtime.settings, fed.upstream) as fresh:  # a process that reads discovery anew
        url, cookie, _ = await begin(fresh, "corp")
        status, problem = await finish(fresh, await idp.authorize(url, "kim-sub"), cookie)
        assert status == 403 and "RFC 9207" in problem["detail"]
        assert idp.token_calls == 0
        url, cookie, _ = await begin(fresh, "corp")
        location = await idp.authorize(url, "kim-sub") + "&iss=" + idp.url.replace(":", "%3A").replace("/", "%2F")
        status, answer = await finish(fresh, location, cookie)
        assert status == 200, answer


async def test_a_provider_down_at_the_callback_is_502_and_nothing_is_made(fed: Gateway, idp: OidcProvider) -> None:
    """The provider failing at the token call is 502 `provider-unavailable`; no user or identity is created, and
    the state is spent (start again)."""
    await idp.set_user("lee-sub", verified("lee@corp.example"))
    url, cookie, _ = await begin(fed, "corp")
    location = await idp.authorize(url, "lee-sub")
    idp.down = True
    status, problem = await finish(fed, location, cookie)
    assert status == 502, problem
    assert problem["type"] == "urn:gateway:problem:provider-unavailable"
    assert await count(fed, User) == 0 and await count(fed, ExternalIdentity) == 0
    idp.down = False
    assert (await finish(fed, location, cookie))[0] == 403


async def test_a_provider_down_at_start_is_502(fed: Gateway, idp: OidcProvider) -> None:
    """Discovery failing at the first start is 502 and stores no state."""
    idp.down = True
    status, _, body = await fed.call("GET", "/auth/providers/strict/start", allow_redirects=False)
    assert status == 502, body
    assert await count(fed, LoginState) == 0


# -- claims to memberships ---------------------------------------------------------------------------------


async def _membership(gateway: Gateway, user_id: str, slug: str) -> Membership | None:
    async with gateway.runtime.services.sessions() as session:
        return await session.scalar(
            select(Membership).join(Organization).where(Membership.user_id == user_id, Organization.slug == slug)
        )


async def test_claims_map_to_memberships_at_every_sign_in(fed: Gateway, idp: OidcProvider) -> None:
    """`groups: eng` makes the person a member of acme (audited, as the mapping's); when the claim no longer
    matches, the mapping removes what it made, and never touches a membership an admin made."""
    await idp.set_user("mia-sub", verified("mia@corp.example", groups=["eng", "other"]))
    status, answer = await sign_in(fed, idp, "mia-sub")
    assert status == 200, answer
    user = (await me(fed, answer["access_token"]))["id"]
    made = await _membership(fed, user, "acme")
    assert made is not None and made.role == "member" and made.granted_by == "provider:corp"
    (added,) = await events(fed, "member.add")
    assert added.actor == "provider:corp" and added.org == "acme"
    status, _, _ = await fed.call("GET", "/api/x", token=answer["access_token"], org="acme")
    assert status == 200, "the membership works on the next request"

    await fed.member("beta", "mia@corp.example", "viewer")  # an admin's
    await idp.set_user("mia-sub", verified("mia@corp.example", groups=["ops"]))
    status, answer = await sign_in(fed, idp, "mia-sub")
    assert status == 200, answer
    assert await _membership(fed, user, "acme") is None
    kept = await _membership(fed, user, "beta")
    assert kept is not None and kept.role == "viewer" and kept.granted_by is None
    assert [event.org for event in await events(fed, "member.remove")] == ["acme"]


# -- linking while signed in, the identity list, unlinking -------------------------------------------------


async def test_a_signed_in_user_links_a_provider_and_may_unlink_it(fed: Gateway, idp: OidcProvider) -> None:
    """POST /auth/providers/{name}/link answers the authorization URL; the callback attaches the identity to the
    signed-in user whatever its email; it then signs them in, is listed, and can be unlinked while a password
    remains."""
    nora = await fed.user("nora@example.com")
    token = await fed.login("nora@example.com")
    status, headers, body = await fed.call("POST", "/auth/providers/corp/link", token=token)
    assert status == 200, body
    url = json.loads(body)["authorization_url"]
    cookie = headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    await idp.set_user("nora-work", {"email": "n.other@corp.example", "email_verified": False})
    status, answer = await finish(fed, await idp.authorize(url, "nora-work"), cookie)
    assert status == 200 and answer == {"linked": True, "provider": "corp"}
    status, signed = await sign_in(fed, idp, "nora-work")
    assert status == 200 and (await me(fed, signed["access_token"]))["id"] == nora
    status, _, body = await fed.call("GET", "/auth/identities", token=token)
    (identity,) = json.loads(body)
    assert identity["provider"] == "corp" and identity["email"] == "n.other@corp.example"
    status, _, _ = await fed.call("DELETE", f"/auth/identities/{identity['id']}", token=token)
    assert status == 204
    assert await count(fed, ExternalIdentity) == 0
    assert len(await events(fed, "user.identity.unlink")) == 1


async def test_linking_needs_a_token_a_recent_sign_in_and_a_free_identity(fed: Gateway, idp: OidcProvider) -> None:
    """Linking without a token is 401; an identity linked to someone else is 409 at the callback."""
    status, _, _ = await fed.call("POST", "/auth/providers/corp/link")
    assert status == 401
    await idp.set_user("olga-sub", verified("olga@corp.example"))
    assert (await sign_in(fed, idp, "olga-sub"))[0] == 200
    await fed.user("pete@example.com")
    token = await fed.login("pete@example.com")
    _, headers, body = await fed.call("POST", "/auth/providers/corp/link", token=token)
    cookie = headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    status, problem = await finish(fed, await idp.authorize(json.loads(body)["authorization_url"], "olga-sub"), cookie)
    assert status == 409, problem


async def test_the_last_way_to_sign_in_cannot_be_unlinked(fed: Gateway, idp: OidcProvider) -> None:
    """A user made by a provider has no password: unlinking their only identity is 409; someone else's identity
    is 404."""
    await idp.set_user("quinn-sub", verified("quinn@corp.example"))
    _, answer = await sign_in(fed, idp, "quinn-sub")
    token = answer["access_token"]
    _, _, body = await fed.call("GET", "/auth/identities", token=token)
    (identity,) = json.loads(body)
    status, _, body = await fed.call("DELETE", f"/auth/identities/{identity['id']}", token=token)
    assert status == 409, body
    await fed.user("rita@example.com")
    other = await fed.login("rita@example.com")
    status, _, _ = await fed.call("DELETE", f"/auth/identities/{identity['id']}", token=other)
    assert status == 404


# -- GitHub -------------------------------------------------------------------------------------------------


async def github_sign_in(gateway: Gateway, hub: GitHubStandIn, login: str) -> tuple[int, Any]:
    url, cookie, _ = await begin(gateway, "gh")
    return await finish(gateway, await hub.authorize(url, login), cookie)


async def test_github_keys_people_on_their_numeric_id_and_primary_verified_email(
    fed: Gateway, hub: GitHubStandIn
) -> None:
    """GitHub (the stand-in): the first sign-in creates the user from the primary verified address; a renamed
    login signs in as the same user; the key is the numeric id (REQ-B18)."""
    hub.add(
        GitHubUser(
            id=4242,
            login="sam",
            emails=[
                {"email": "sam@old.example", "primary": False, "verified": True},
                {"email": "Sam@Example.com", "primary": True, "verified": True},
            ],
        )
    )
    status, answer = await github_sign_in(fed, hub, "sam")
    assert status == 200, answer
    user = await me(fed, answer["access_token"])
    assert user["email"] == "sam@example.com"
    hub.add(GitHubUser(id=4242, login="samuel", emails=hub.users["sam"].emails))
    status, again = await github_sign_in(fed, hub, "samuel")
    assert status == 200 and (await me(fed, again["access_token"]))["id"] == user["id"]
    async with fed.runtime.services.sessions() as session:
        (identity,) = await session.scalars(select(ExternalIdentity))
        assert (identity.provider, identity.subject) == ("gh", "4242")


async def test_github_without_a_primary_verified_email_is_refused(fed: Gateway, hub: GitHubStandIn) -> None:
    """A primary address that GitHub has not verified is not used: 403, no user."""
    hub.add(GitHubUser(id=7, login="tess", emails=[{"email": "tess@example.com", "primary": True, "verified": False}]))
    status, problem = await github_sign_in(fed, hub, "tess")
    assert status == 403 and problem["type"] == "urn:gateway:problem:provider-email-unverified"
    assert await count(fed, User) == 0


async def test_github_teams_map_to_memberships_and_a_failed_lookup_refuses(fed: Gateway, hub: GitHubStandIn) -> None:
    """A GitHub team (`org/team`, compared without case) maps to a role; when GitHub cannot list teams the sign-in
    is refused (502) and nothing changes: the rule fails closed."""
    hub.add(
        GitHubUser(
            id=99,
            login="uma",
            emails=[{"email": "uma@example.com", "primary": True, "verified": True}],
            teams=[("acme-gh", "platform")],
        )
    )
    status, answer = await github_sign_in(fed, hub, "uma")
    assert status == 200, answer
    user = (await me(fed, answer["access_token"]))["id"]
    made = await _membership(fed, user, "acme")
    assert made is not None and made.role == "admin" and made.granted_by == "provider:gh"
    hub.fail_orgs = True
    hub.users["uma"].teams = []
    status, problem = await github_sign_in(fed, hub, "uma")
    assert status == 502, problem
    assert await _membership(fed, user, "acme") is not None
    hub.fail_orgs = False
    status, _ = await github_sign_in(fed, hub, "uma")
    assert status == 200
    assert await _membership(fed, user, "acme") is None


async def test_the_password_still_works_for_a_linked_user(fed: Gateway, idp: OidcProvider) -> None:
    """Linking adds a way to sign in; the password login answers as before."""
    await fed.user("vic@corp.example")
    await idp.set_user("vic-sub", verified("vic@corp.example"))
    assert (await sign_in(fed, idp, "vic-sub"))[0] == 200
    status, _, _ = await fed.call("POST", "/auth/login", json={"email": "vic@corp.example", "password": PASSWORD})
    assert status == 200


async def test_a_mapping_an_org_refuses_is_skipped_and_the_sign_in_goes_on(fed: Gateway, idp: OidcProvider) -> None:
    """A rule naming an org that takes members by invitation only is skipped (logged), and the sign-in still
    succeeds with the other rules applied."""
    async with fed.runtime.services.sessions() as session:
        await session.execute(update(Organization).where(Organization.slug == "beta").values(direct_add=False))
        await session.commit()
    await idp.set_user("will-sub", verified("will@corp.example", groups=["ops", "eng"]))
    status, answer = await sign_in(fed, idp, "will-sub")
    assert status == 200, answer
    user = (await me(fed, answer["access_token"]))["id"]
    assert await _membership(fed, user, "beta") is None
    made = await _membership(fed, user, "acme")
    assert made is not None and made.role == "member"


async def test_a_role_an_admin_changed_is_no_longer_the_mappings(fed: Gateway, idp: OidcProvider) -> None:
    """Once an admin changes the role of a membership a mapping made, it is the admin's: the mapping neither
    changes nor removes it when the claim stops matching."""
    await idp.set_user("xia-sub", verified("xia@corp.example", groups=["eng"]))
    assert (await sign_in(fed, idp, "xia-sub"))[0] == 200
    await fed.member("acme", "xia@corp.example", "admin")
    await idp.set_user("xia-sub", verified("xia@corp.example", groups=[]))
    status, answer = await sign_in(fed, idp, "xia-sub")
    assert status == 200, answer
    kept = await _membership(fed, (await me(fed, answer["access_token"]))["id"], "acme")
    assert kept is not None and kept.role == "admin" and kept.granted_by is None
