"""Authorization of /admin: authenticate like the proxy (JWT or API key), then ask the same enforcer.

The Casbin object of an admin request is `admin:` + its path after /admin, rebuilt from the route template and
the validated path parameters (never from the raw target), in the org named by the `{org}` parameter. Platform
endpoints (creating orgs, global lines) are checked in domain `*`, where only global grants (superadmin) apply;
so are requests for an org that is unknown or archived. Handlers declare which with `opt={"authz": ...}`:

    "org"       (default) the `{org}` path parameter is the domain
    "platform"  domain `*`
    "self"      authenticated only: the handler returns the caller's own data (GET /admin/orgs)
    "self-service"  domain `*`, but with `[orgs] self_service` any signed-in person passes (POST /admin/orgs;
                the handler applies `orgs.per_user` to whoever lacks the platform-wide grant)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import select

from gateway.access.audit import AuditEvent
from gateway.access.credentials import authenticate_waiting
from gateway.access.decisions import Denied, enforce
from gateway.access.request_ids import request_id_of
from gateway.api.deps import client_address
from gateway.db.models import Membership, Organization, User
from gateway.errors import Forbidden, MfaEnrollmentRequired, Unauthenticated, Unprocessable
from gateway.identity.accounts import normalise_email
from gateway.identity.mfa import confirmed_factor
from gateway.identity.tokens import Principal
from gateway.manage.common import Actor
from gateway.manage.roles import SUPERADMIN
from gateway.policy import HotState
from gateway.policy.rules import ADMIN_OBJECT, ANY_DOMAIN
from gateway.runtime import Runtime

CALLER_KEY = "gateway.caller"
_PARAM_RE = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class Caller:
    """The authorized caller of an admin request."""

    principal: Principal
    domain: str
    """The org slug the request was authorized in, or `*`."""
    actor: Actor

    @property
    def user_id(self) -> str:
        return self.principal.user_id


def admin_object(template: str, params: dict[str, Any]) -> str:
    """`/admin/orgs/{org:str}/members/{member:str}` with its parameters -> `admin:/orgs/acme/members/<id>`."""
    return ADMIN_OBJECT + _PARAM_RE.sub(lambda m: str(params[m.group(1)]), template.removeprefix("/admin"))


def allowed(state: HotState, principal: Principal, domain: str, obj: str, method: str) -> bool:
    try:
        enforce(state, principal.subject, domain, obj, method, key=principal.key)
    except Denied:
        return False
    return True


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: 401 without valid credentials, 403 (with a decision id) unless the enforcer allows.
    OPTIONS (Litestar's own answer: the allowed methods, which the OpenAPI document publishes anyway) needs
    no credentials."""
    if connection.scope.get("method") == "OPTIONS":
        return
    runtime: Runtime = connection.app.state.runtime
    state = runtime.state
    headers = connection.headers
    request_id = request_id_of(connection.scope["headers"])
    client_ip = client_address(connection, runtime.services)
    try:
        principal = await authenticate_waiting(
            runtime.services.tokens,
            headers.get("authorization"),
            api_key=headers.get("x-api-key"),
            state=state,
            client_ip=client_ip,
            outside=runtime.services.outside,
        )
    except Unauthenticated as refused:
        _audit(runtime, connection, request_id, client_ip, status=401, reason=refused.audit_reason)
        raise
    if not principal.has_account:
        # An outside caller with no linked user: the management API acts as one of our users (actors, owners,
        # creators are users), so it is closed to `ext:` subjects whatever the policy says.
        _audit(
            runtime,
            connection,
            request_id,
            client_ip,
            status=403,
            reason="outside identity with no linked account",
            subject=principal.subject,
        )
        raise Forbidden("an outside identity needs a linked account to use the management API")
    mode = handler.opt.get("authz", "org")
    method = connection.scope["method"]  # type: ignore[typeddict-item]
    params = dict(connection.path_params)
    member = params.get("member")
    if mode == "org" and isinstance(member, str) and "@" in member:
        # One member, one object: a member named by email is decided as the same object as by id, so a line
        # about `admin:/orgs/acme/members/<id>` cannot be stepped around by spelling the email instead.
        params["member"] = await _member_by_email(runtime, str(params["org"]), member) or member
    obj = admin_object(connection.scope["path_template"], params)
    if mode == "org":
        slug = str(connection.path_params["org"])
        # An unknown or archived org is not in the snapshot: only platform-wide grants apply there.
        domain = slug if state.org(slug) is not None else ANY_DOMAIN
        bound = principal.key.org if principal.key is not None else principal.org
        if bound is not None and bound != slug:
            raise Forbidden("not allowed in this organization")
    else:
        domain = ANY_DOMAIN
        if principal.key is not None:
            raise Forbidden("API keys act inside their own organization only")
        if principal.org is not None:
            raise Forbidden("tokens bound to an organization act inside it only")
    if runtime.settings.login.superadmins_need_mfa and principal.key is None:
        await _require_mfa_for_superadmins(runtime, principal)
    if mode != "self":
        try:
            enforce(state, principal.subject, domain, obj, method, key=principal.key)
        except Denied as denied:
            if mode == "self-service" and runtime.settings.orgs.self_service and principal.key is None:
                pass  # any signed-in person, within the handler's own limit
            else:
                _audit(
                    runtime,
                    connection,
                    request_id,
                    client_ip,
                    status=403,
                    reason=denied.reason,
                    subject=principal.subject,
                    org=domain,
                    decision_id=denied.decision_id,
                )
                raise

    def may(other: str, other_method: str) -> bool:
        return allowed(state, principal, domain, other, other_method)

    actor = Actor(subject=principal.subject, request_id=request_id, may=may)
    connection.scope[CALLER_KEY] = Caller(principal=principal, domain=domain, actor=actor)  # type: ignore[literal-required]


def _audit(
    runtime: Runtime,
    connection: ASGIConnection[Any, Any, Any, Any],
    request_id: str,
    client_ip: str,
    *,
    status: int,
    reason: str,
    subject: str | None = None,
    org: str | None = None,
    decision_id: str | None = None,
) -> None:
    """A refused admin request (no valid credential: 401; not allowed: 403) leaves the same audit line as a
    refused proxied one."""
    runtime.services.audit.emit(
        AuditEvent(
            method=connection.scope["method"],  # type: ignore[typeddict-item]
            path=connection.url.path,
            route="/admin",
            subject=subject,
            org=org,
            granted=False,
            reason=reason,
            decision_id=decision_id,
            status=status,
            request_id=request_id,
            client_ip=client_ip,
        )
    )


async def _member_by_email(runtime: Runtime, org: str, email: str) -> str | None:
    try:
        address = normalise_email(email)
    except Unprocessable:
        return None
    async with runtime.services.sessions() as db:
        user_id: str | None = await db.scalar(
            select(Membership.user_id)
            .join(User, User.id == Membership.user_id)
            .join(Organization, Organization.id == Membership.org_id)
            .where(Organization.slug == org, User.email == address)
        )
    return user_id


async def _require_mfa_for_superadmins(runtime: Runtime, principal: Principal) -> None:
    if SUPERADMIN not in runtime.state.roles_of(principal.subject, ANY_DOMAIN):
        return
    async with runtime.services.sessions() as db:
        if await confirmed_factor(db, principal.user_id) is None:
            raise MfaEnrollmentRequired("superadmins must turn on two-step sign-in (POST /auth/mfa/totp) first")


def provide_caller(request: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    caller: Caller = request.scope[CALLER_KEY]  # type: ignore[literal-required]
    return caller
