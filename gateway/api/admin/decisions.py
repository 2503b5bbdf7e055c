"""/admin/orgs/{org}/check and /explain: "may this subject do this?" and "why (not)?", from the live policy."""

from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.errors import Conflict, InvalidPath, Unprocessable
from gateway.manage import members
from gateway.policy import Decision
from gateway.policy.rules import ADMIN_OBJECT, METHODS, ROLE_RE, USER_SUBJECT_RE
from gateway.proxy.paths import canonical_path
from gateway.runtime import Runtime


async def _subject(db: AsyncSession, raw: str) -> str:
    value = raw.strip()
    if USER_SUBJECT_RE.match(value):
        return value
    if "@" in value:
        return "user:" + (await members.find_user(db, email=value)).id
    if USER_SUBJECT_RE.match("user:" + value):
        return "user:" + value
    if ROLE_RE.match(value):
        return value
    raise Unprocessable("subject: a user id, user:<id>, an email or a role name")


def _object(path: str) -> str:
    namespace = ADMIN_OBJECT if path.startswith(ADMIN_OBJECT) else ""
    try:
        return namespace + canonical_path(path.removeprefix(namespace).encode())
    except InvalidPath as exc:
        raise Unprocessable(f"path: {exc.detail}") from None


def _method(method: str) -> str:
    if method.upper() not in METHODS or method == "*":
        raise Unprocessable(f"method: one of {', '.join(sorted(METHODS - {'*'}))}")
    return method.upper()


async def _decide(
    org: FromPath[str], data: schemas.CheckRequest, runtime: Runtime, db: AsyncSession
) -> tuple[str, Decision]:
    subject = await _subject(db, data.subject)
    obj, method = _object(data.path), _method(data.method)
    if runtime.policy.org(org) is None:
        raise Conflict("org: archived; nothing is allowed in it")
    # The live decision and its line (equal to casbin's enforce_ex, which the differential test checks).
    return subject, runtime.policy.decide(subject, org, obj, method)


class DecisionsController(Controller):
    path = "/orgs/{org:str}"
    tags = ["decisions"]

    @post("/check", status_code=200)
    async def check(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.CheckRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> schemas.CheckResult:
        """Allow or deny for (subject, path, method) in this org, as the gateway decides it now."""
        subject, decision = await _decide(org, data, runtime, db)
        return schemas.CheckResult(allowed=decision.allowed, subject=subject)

    @post("/explain", status_code=200)
    async def explain(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.CheckRequest],
        runtime: NamedDependency[Runtime],
        db: NamedDependency[AsyncSession],
    ) -> schemas.ExplainResult:
        """The decision, the subject's roles here, and the policy line that decided (Casbin's enforce_ex)."""
        subject, decision = await _decide(org, data, runtime, db)
        return schemas.ExplainResult(
            allowed=decision.allowed,
            subject=subject,
            roles=list(runtime.policy.roles_of(subject, org)),
            rule=["p", *decision.rule] if decision.rule else None,
            reason=decision.reason,
        )
