"""Stage 3, resolve the organization: from `X-Org`, a path segment or the API key, validated before Casbin."""

from __future__ import annotations

from gateway.errors import BadRequest, Forbidden
from gateway.policy import HotState, OrgRef
from gateway.proxy.match import RouteMatch

ORG_HEADER = "x-org"


def resolve_org(state: HotState, match: RouteMatch, header_value: str | None, key_org: str | None = None) -> OrgRef:
    """An unknown org is 403 with the same body as a denial, so existence is never revealed. A credential bound
    to an org (an API key's, an outside token's `org_claim`: `key_org`) has that org: a request naming another one
    (header or path) is refused."""
    named = _named(match, header_value)
    if key_org is not None:
        if named is not None and named != key_org:
            raise Forbidden("not allowed in this organization")
        named = key_org
    if named is None:
        raise BadRequest("X-Org: this route needs the organization slug in the X-Org header")
    org = state.org(named) if named else None
    if org is None:
        raise Forbidden("not allowed in this organization")
    return org


def _named(match: RouteMatch, header_value: str | None) -> str | None:
    if match.route.org_from == "path":
        rest = match.path[len(match.route.prefix) :] if match.route.prefix != "/" else match.path
        return rest.lstrip("/").split("/", 1)[0]
    return header_value.strip() if header_value is not None else None
