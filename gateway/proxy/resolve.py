"""Stage 3, resolve the organization: from `X-Org` or a path segment, validated before Casbin sees it."""

from __future__ import annotations

from gateway.errors import BadRequest, Forbidden
from gateway.policy import OrgRef, PolicyEngine
from gateway.proxy.match import RouteMatch

ORG_HEADER = "x-org"


def resolve_org(policy: PolicyEngine, match: RouteMatch, header_value: str | None) -> OrgRef:
    """An unknown org is 403 with the same body as a denial, so existence is never revealed."""
    if match.route.org_from == "path":
        rest = match.path[len(match.route.prefix) :] if match.route.prefix != "/" else match.path
        slug = rest.lstrip("/").split("/", 1)[0]
    else:
        if header_value is None:
            raise BadRequest("X-Org: this route needs the organization slug in the X-Org header")
        slug = header_value.strip()
    org = policy.org(slug) if slug else None
    if org is None:
        raise Forbidden("not allowed in this organization")
    return org
