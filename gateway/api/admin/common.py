"""Small pieces every admin controller uses: the org of the path, ETags, view conversions."""

from __future__ import annotations

import re
from typing import Annotated

from litestar.params import HeaderParameter, PathParameter, QueryParameter

from gateway.api.admin import schemas
from gateway.db.models import Organization
from gateway.errors import BadRequest
from gateway.manage.common import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="items per page")]
LineId = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="a policy line's id")]
"""Ids are 32-bit in the store: anything outside is refused with 422, never sent to the database."""
VersionNumber = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="a version of the org's lines")]
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
        description=org.description,
        billing_email=org.billing_email,
        max_members=org.max_members,
        max_keys=org.max_keys,
        max_key_days=org.max_key_days,
        direct_add=org.direct_add,
    )
