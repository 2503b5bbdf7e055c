"""Signing in through outside providers: the list, start (a redirect), the callback (what password login
answers), linking a provider while signed in, and the caller's linked identities."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.cookies import read_cookie
from gateway.api.auth.common import NO_STORE, PRINCIPAL, human, token_response
from gateway.api.openapi import Problem
from gateway.api.portal import pages as portal
from gateway.api.portal.guard import Prepared
from gateway.api.schemas import (
    AuthorizationUrl,
    IdentityView,
    LinkedIdentityResult,
    MfaChallengeResponse,
    ProviderView,
    TokenResponse,
)
from gateway.db.models import User
from gateway.errors import PROBLEM_CONTENT_TYPE
from gateway.identity import accounts, lifecycle, sessions
from gateway.identity.federation import Federation, linking
from gateway.identity.federation.state import cookie_header, cookie_name
from gateway.identity.tokens import Principal, TokenService
from gateway.manage import signin
from gateway.settings import Settings

MAX_RETURN_TO = 2048
_CALLBACK_PARAMS = ("code", "state", "iss", "error")
ReturnTo = Annotated[
    str | None,
    QueryParameter(
        description="with [browser] enabled: sign in this browser (cookie) and come back here", max_length=MAX_RETURN_TO
    ),
]


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_CONTENT_TYPE)


_PROVIDER_PROBLEMS = {
    409: _problem("The identity is linked to another account, or was linked or created meanwhile"),
    502: _problem("The provider is unreachable or answered with an error; nothing was created"),
    504: _problem("The provider did not answer in time; nothing was created"),
}


class ProvidersController(Controller):
    path = "/auth"
    tags = ["outside providers"]

    @get("/providers")
    async def list_providers(self, federation: NamedDependency[Federation]) -> list[ProviderView]:
        """The configured identity providers, to offer as sign-in buttons."""
        return [
            ProviderView(
                name=provider.name,
                display_name=provider.label,
                kind=provider.kind,
                start_url=f"/auth/providers/{provider.name}/start",
            )
            for provider in federation.configured
        ]

    @get(
        "/providers/{name:str}/start",
        status_code=302,
        responses={302: ResponseSpec(data_container=None, description="To the provider's sign-in page")},
        opt={"may_be_missing": True},
    )
    async def start(
        self,
        request: Request[Any, Any, State],
        name: FromPath[str],
        federation: NamedDependency[Federation],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
        return_to: ReturnTo = None,
    ) -> Response[None]:
        """Begin signing in with provider `name`: a redirect to it, and a short-lived login cookie that binds the
        sign-in to this browser. With `[browser] enabled`, a `return_to` (the portal's buttons send one) makes
        this a browser sign-in: the callback ends in the portal's session cookie and a redirect there."""
        browser = read_cookie(request.headers.get("cookie"), cookie_name(settings.browser))
        url, cookie = await signin.start(db, federation, name, browser=browser, return_to=return_to)
        headers = {**NO_STORE, "location": url, "set-cookie": cookie_header(settings.browser, cookie)}
        return Response(None, status_code=302, headers=headers)

    @get("/providers/{name:str}/callback", responses=_PROVIDER_PROBLEMS)
    async def callback(
        self,
        request: Request[Any, Any, State],
        name: FromPath[str],
        federation: NamedDependency[Federation],
        settings: NamedDependency[Settings],
        tokens: NamedDependency[TokenService],
        client: NamedDependency[sessions.Client],
        db: NamedDependency[AsyncSession],
    ) -> Response[TokenResponse | MfaChallengeResponse | LinkedIdentityResult]:
        """Where the provider sends the browser back. Answers as POST /auth/login does: tokens of a new session,
        or an MFA challenge when the user has a second factor; after a link started by POST
        /auth/providers/{name}/link, whether the identity was attached. 403 for a bad, spent or expired state,
        or one from another browser, before anything is asked of the provider."""
        params = {key: request.query_params[key] for key in _CALLBACK_PARAMS if key in request.query_params}
        browser_enabled = settings.browser.enabled
        browser = read_cookie(request.headers.get("cookie"), cookie_name(settings.browser))
        done = await signin.complete(
            db, federation, tokens, name, params, browser=browser, client=client, browser_sessions=browser_enabled
        )
        result = done.result
        if isinstance(result, User) or (done.return_to is not None and isinstance(result, accounts.MfaRequired)):
            # Started from the portal's button: the portal's session cookie (or its second-factor step), and
            # back to the return URL, checked again here (REQ-B2).
            target = portal.return_url(done.return_to, settings)
            return Prepared(await portal.after_first_factor(request, settings, tokens, db, result, client, target))
        if result is None:
            return Response(LinkedIdentityResult(linked=done.linked, provider=name), headers=NO_STORE)
        if isinstance(result, accounts.MfaRequired):
            challenge = MfaChallengeResponse(mfa_token=result.mfa_token, expires_in=result.expires_in)
            return Response(challenge, status_code=200, headers=NO_STORE)
        return token_response(result)  # type: ignore[return-value]

    @post("/providers/{name:str}/link", status_code=200, dependencies=PRINCIPAL, responses=_PROVIDER_PROBLEMS)
    async def link(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        federation: NamedDependency[Federation],
        settings: NamedDependency[Settings],
        request: Request[Any, Any, State],
        db: NamedDependency[AsyncSession],
    ) -> Response[AuthorizationUrl]:
        """Link provider `name` to the signed-in account (needs a recent sign-in): the URL to send this browser
        to, and the login cookie. The callback then attaches the identity to this account."""
        lifecycle.require_recent(principal)
        user = await human(db, principal)
        browser = read_cookie(request.headers.get("cookie"), cookie_name(settings.browser))
        url, cookie = await signin.start(db, federation, name, browser=browser, link_user_id=user.id)
        headers = {**NO_STORE, "set-cookie": cookie_header(settings.browser, cookie)}
        return Response(AuthorizationUrl(authorization_url=url), headers=headers)

    @get("/identities", dependencies=PRINCIPAL)
    async def list_identities(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> Response[list[IdentityView]]:
        """The caller's identities at outside providers."""
        rows = await linking.linked(db, principal.user_id)
        views = [
            IdentityView(
                id=row.id,
                provider=row.provider,
                email=row.email,
                created_at=row.created_at,
                last_login_at=row.last_login_at,
            )
            for row in rows
        ]
        return Response(views, headers=NO_STORE)

    @delete("/identities/{identity:str}", dependencies=PRINCIPAL)
    async def unlink(
        self,
        identity: FromPath[str],
        principal: NamedDependency[Principal],
        federation: NamedDependency[Federation],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Unlink one of the caller's identities; 409 when it is the account's last way to sign in (no password
        and no other identity at a configured provider)."""
        user = await human(db, principal)
        await linking.unlink(db, user, identity, configured=federation.names)
