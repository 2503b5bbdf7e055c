"""Stage 3, resolve the organization: from `X-Org`, the path, the host, the route or the API key, validated
before Casbin.

One org is decided and it is the one everything uses: Casbin, the rate limits, X-Gateway-Org, the identity
token and the upstream's X-Org (proxy/headers.py). So whatever else names an org must agree with it: an
`X-Org` on a route whose org comes from the path, host or route, and the org of an API key, are refused (403)
when they name another one.
"""

from __future__ import annotations

from gateway.errors import BadRequest, Forbidden
from gateway.hosts import label_in
from gateway.policy import HotState, OrgRef
from gateway.proxy.match import HEADER_ORG, CompiledRoute, OrgSource, RouteMatch

ORG_HEADER = "x-org"


def resolve_org(state: HotState, match: RouteMatch, header_value: str | None, key_org: str | None = None) -> OrgRef:
    """The org of a matched request (see `decide_org`)."""
    return decide_org(state, match.route, match.path, match.host, header_value, key_org)


def decide_org(
    state: HotState,
    route: CompiledRoute | None,
    path: str,
    host: str | None,
    header_value: str | None,
    key_org: str | None = None,
) -> OrgRef:
    """The org named by `route`'s source (X-Org without a route). An unknown org, or a path or host that names
    none or not a slug, is 403 with the same body as a denial, so existence is never revealed. X-Org, or a
    credential bound to an org (an API key's, an outside token's `org_claim`: `key_org`), naming another org than
    the route's source is refused alike."""
    source = route.org if route is not None else HEADER_ORG
    header = header_value.strip() if header_value is not None else None
    if source.kind == "header":
        named = header
    else:
        named = _read(source, route, path, host)
        if header is not None and header != named:
            raise Forbidden("not allowed in this organization")
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


def _read(source: OrgSource, route: CompiledRoute | None, path: str, host: str | None) -> str:
    """The slug the path, host or route names; "" when the request does not fit the pattern."""
    if source.kind == "default":
        return source.fixed
    if source.kind == "host":
        return label_in(source.host, host)
    assert route is not None  # only routes have a path source
    rest = path[len(route.prefix) :] if route.prefix != "/" else path
    segments = rest.split("/")[1:]  # canonical: `rest` is "" or starts with "/", no empty segment inside
    if len(segments) < len(source.path):
        return ""
    found = ""
    for segment, expected in zip(segments, source.path, strict=False):
        if expected is None:
            found = segment
        elif segment != expected:
            return ""
    return found
