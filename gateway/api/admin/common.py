"""Small pieces every admin controller uses: the org of the path, ETags, view conversions."""

from __future__ import annotations

import re
from typing import Annotated

from litestar.params import HeaderParameter, PathParameter, QueryParameter

from gateway.api.admin import schemas
from gateway.db.models import Organization
from gateway.errors import BadRequest
from gateway.manage import audit, keys, members, roles
from gateway.manage.common import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="items per page")]
LineId = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="a policy line's id")]
"""Ids are 32-bit in the store: anything outside is refused with 422, never sent to the database."""
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page", max_length=512)]
IfMatch = Annotated[str | None, HeaderParameter(name="if-match", description="the ETag read before (no lost updates)")]
DEFAULT_PAGE = DEFAULT_LIMIT
_ETAG_RE = re.compile(r'^(?:W/)?"(\d{1,18})"$')


def etag(version: int) -> dict[str, str]:
    return {"etag": f'"{version}"'}


def if_match(header: str | None) -> int | None:
    """The version an If-Match header names; writes without it are last-writer-wins."""
    if header is None:
        return None
    match = _ETAG_RE.match(header.strip())
    if match is None:
        raise BadRequest('If-Match: expected an ETag this API returned, such as "3"')
    return int(match.group(1))


def org_view(org: Organization) -> schemas.OrgView:
    return schemas.OrgView(
        id=org.id,
        slug=org.slug,
        name=org.name,
        created_at=org.created_at,
        archived=org.archived_at is not None,
        version=org.version,
    )


def member_view(view: members.MemberView) -> schemas.MemberView:
    return schemas.MemberView(view.user_id, view.email, view.name, view.kind, view.role, view.created_at)


def role_view(view: roles.RoleView) -> schemas.RoleView:
    return schemas.RoleView(
        name=view.name,
        system=view.system,
        description=view.description,
        permissions=[schemas.PermissionView(p.path, list(p.methods), p.effect) for p in view.permissions],
        inherits=list(view.inherits),
        version=view.version,
    )


def key_view(view: keys.KeyView) -> schemas.KeyView:
    return schemas.KeyView(
        id=view.id,
        name=view.name,
        user_id=view.user_id,
        prefix=view.prefix,
        last4=view.last4,
        scopes=list(view.scopes),
        created_at=view.created_at,
        expires_at=view.expires_at,
        last_used_at=view.last_used_at,
        revoked_at=view.revoked_at,
    )


def audit_view(view: audit.AuditView) -> schemas.AuditView:
    return schemas.AuditView(
        id=view.id,
        created_at=view.created_at,
        actor=view.actor,
        action=view.action,
        org=view.org,
        target=view.target,
        before=view.before,
        after=view.after,
        request_id=view.request_id,
    )
