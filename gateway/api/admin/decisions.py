"""Questions of the live policy in one org: /check ("may this subject do this?", also in batches), /explain ("why
(not)?"), /who-can ("which members and roles may do this?") and /subjects/{subject}/lines ("what can this subject
do?").

Only the org's own subjects can be named: its members (by id or email), its service accounts, its roles (system
or custom). Anyone else, an unknown email included, gets the same 404: the endpoint never turns an address on
the platform into a user id. Objects are proxied paths or management objects of this org (`admin:/orgs/<org>...`);
another org's or a platform object is 422, since it is never decided in this org.
"""

from __future__ import annotations

import asyncio

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.db.models import Membership, Organization, Role, User
from gateway.errors import Conflict, GatewayError, InvalidPath, NotFound, Unprocessable
from gateway.identity.accounts import normalise_email
from gateway.manage.common import find_org
from gateway.manage.roles import SYSTEM_ROLES, custom_role
from gateway.paths import canonical_path
from gateway.policy import Decision, HotState
from gateway.policy.rules import ADMIN_OBJECT, METHODS, ROLE_RE, USER_SUBJECT_RE

_NOT_HERE = "subject: no such member, service account or role in this organization"


async def _subject(db: AsyncSession, org: Organization, raw: str) -> str:
    """`user:<id>` of a member (or service account) of `org`, or a role of `org`; 404 for anything else."""
    value = raw.strip()
    user_id: str | None = None
    if USER_SUBJECT_RE.match(value):
        user_id = value.removeprefix("user:")
    elif USER_SUBJECT_RE.match("user:" + value):
        user_id = value
    elif "@" in value:
        try:
            address = normalise_email(value)
        except Unprocessable:
            raise NotFound(_NOT_HERE) from None
        user_id = await db.scalar(
            select(Membership.user_id)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == org.id, User.email == address)
        )
        if user_id is None:
            raise NotFound(_NOT_HERE)
    elif ROLE_RE.match(value):
        if value in SYSTEM_ROLES or await custom_role(db, org, value) is not None:
            return value
        raise NotFound(_NOT_HERE)
    else:
        raise Unprocessable("subject: a user id, user:<id>, an email or a role name")
    if await db.get(Membership, (user_id, org.id)) is None:
        raise NotFound(_NOT_HERE)
    return "user:" + user_id


def _object(org: str, path: str) -> str:
    namespace = ADMIN_OBJECT if path.startswith(ADMIN_OBJECT) else ""
    try:
        obj = namespace + canonical_path(path.removeprefix(namespace).encode())
    except InvalidPath as exc:
        raise Unprocessable(f"path: {exc.detail}") from None
    own = f"{ADMIN_OBJECT}/orgs/{org}"
    if namespace and obj != own and not obj.startswith(own + "/"):
        raise Unprocessable(f"path: management objects decided in this organization start with {own}")
    return obj


def _method(method: str) -> str:
    if method.upper() not in METHODS or method == "*":
        raise Unprocessable(f"method: one of {', '.join(sorted(METHODS - {'*'}))}")
    return method.upper()


async def _decide(
    org: FromPath[str], data: schemas.CheckRequest, hot: HotState, db: AsyncSession
) -> tuple[str, Decision]:
    found = await _live_org(db, hot, org)
    subject = await _subject(db, found, data.subject)
    obj, method = _object(org, data.path), _method(data.method)
    # The live decision and its line (equal to casbin's enforce_ex, which the differential test checks).
    return subject, hot.decide(subject, org, obj, method)


async def _live_org(db: AsyncSession, hot: HotState, org: str) -> Organization:
    found = await find_org(db, org)
    if hot.org(org) is None:
        raise Conflict("org: archived; nothing is allowed in it")
    return found


def _numbered(error: GatewayError, position: int) -> GatewayError:
    """The same error, its detail naming the batch entry (`checks[3].subject: ...`)."""
    error.detail = f"checks[{position}].{error.detail}"
    return error


class DecisionsController(Controller):
    path = "/orgs/{org:str}"
    tags = ["decisions"]

    @post("/check", status_code=200)
    async def check(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.CheckRequest],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.CheckResult:
        """Allow or deny for (subject, path, method) in this org, as the gateway decides it now."""
        subject, decision = await _decide(org, data, hot, db)
        return schemas.CheckResult(allowed=decision.allowed, subject=subject)

    @post("/check/batch", status_code=200)
    async def check_batch(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.CheckBatch],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.CheckBatchResult:
        """Up to 100 checks in one call, answered in order; the first invalid entry fails the call, named."""
        if not 1 <= len(data.checks) <= schemas.MAX_BATCH:
            raise Unprocessable(f"checks: 1 to {schemas.MAX_BATCH} entries")
        results = []
        for position, check in enumerate(data.checks):
            try:
                subject, decision = await _decide(org, check, hot, db)
            except (NotFound, Unprocessable) as error:
                raise _numbered(error, position) from None
            results.append(schemas.CheckResult(allowed=decision.allowed, subject=subject))
        return schemas.CheckBatchResult(results)

    @post("/who-can", status_code=200)
    async def who_can(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.AccessQuery],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.WhoCanResult:
        """Every member and service account of this org that may do METHOD on PATH now, and every role of the
        org that allows it, each with the line that allows it."""
        found = await _live_org(db, hot, org)
        obj, method = _object(org, data.path), _method(data.method)
        rows = await db.execute(
            select(User.id, User.email, User.name, User.kind, Membership.role)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.org_id == found.id)
            .order_by(User.email, User.id)
        )
        members = []
        for count, (user_id, email, name, kind, role) in enumerate(rows, 1):
            if count % 500 == 0:
                await asyncio.sleep(0)  # a large org: let proxied requests through between chunks
            decision = hot.decide(f"user:{user_id}", org, obj, method, remember=False)
            if decision.allowed:
                allowing = ["p", *decision.rule]
                members.append(schemas.AllowedMember(f"user:{user_id}", email, name, kind, role, allowing))
        custom = await db.scalars(select(Role.name).where(Role.org_id == found.id).order_by(Role.name))
        roles = []
        for role in (*SYSTEM_ROLES, *custom):
            decision = hot.decide(role, org, obj, method, remember=False)
            if decision.allowed:
                roles.append(schemas.AllowedRole(role, ["p", *decision.rule]))
        return schemas.WhoCanResult(members, roles)

    @get("/subjects/{subject:str}/lines")
    async def subject_lines(
        self,
        org: FromPath[str],
        subject: FromPath[str],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.SubjectLines:
        """What a member, service account or role can do here: its roles and every line that can decide for
        it (its own and its roles', this org's and platform-wide), in the order they are evaluated."""
        found = await _live_org(db, hot, org)
        name = await _subject(db, found, subject)
        lines = [["p", *line] for line in hot.lines_for(name, org)]
        return schemas.SubjectLines(subject=name, roles=list(hot.roles_of(name, org)), lines=lines)

    @post("/explain", status_code=200)
    async def explain(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.CheckRequest],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
    ) -> schemas.ExplainResult:
        """The decision, the subject's roles here, and the policy line that decided (Casbin's enforce_ex)."""
        subject, decision = await _decide(org, data, hot, db)
        return schemas.ExplainResult(
            allowed=decision.allowed,
            subject=subject,
            roles=list(hot.roles_of(subject, org)),
            rule=["p", *decision.rule] if decision.rule else None,
            reason=decision.reason,
        )
