"""Forward-auth mode: decisions only, for Traefik ForwardAuth, nginx `auth_request` and Caddy `forward_auth`.

The proxy in front describes the original request with X-Forwarded-Method and X-Forwarded-Uri and passes the
caller's Authorization and X-Org headers; the gateway answers 200 with the identity headers, or 401/403, after
the same canonical-path, authentication, organization and Casbin steps as proxied traffic. Those descriptive
headers are believed only from `trusted_proxies` (a spoofed X-Forwarded-Uri was OAuth2 Proxy's
GHSA-7x63-xv5r-3p2x): from anyone else the answer is 403.

The organization comes from where the route table says for the route that X-Forwarded-Host and X-Forwarded-Uri
match (proxy/match.py, proxy/resolve.py: X-Org, the path, the host or the route's own org); a described request
that no route matches takes it from X-Org. Only the org is taken from the route: `public` and the upstream play
no part in a decision here.

The client is the address the proxy names in X-Forwarded-For (or Forwarded), by the rule of access/peer.py:
what API keys' allow-lists are checked against, and the audit line's `client_ip`. A proxy that sends neither
makes itself the client.

Browsers (`[forward_auth] auth` listing `cookie`): the session cookie the proxy passes on authenticates like
on a cookie route (the same cross-site check for unsafe methods, against the original request's origin), and
an allowing answer re-issues an active browser's cookie in `Set-Cookie`. Without a valid session a browser
(`Accept` naming text/html, not a script) is sent to the portal's sign-in page with the original URL as `rd`
(from X-Original-URL, else X-Forwarded-Proto, -Host and -Uri; all believed only from trusted proxies, which
are the only ones answered): 302 for GET and HEAD, 303 for other methods, as Authelia does for Traefik and
Caddy, which pass any non-2xx answer to the client. With `?mode=nginx` on the auth URL the answer is 401 with
`Location` instead (nginx's `auth_request` knows only 2xx, 401 and 403; the README's `error_page 401` turns it
into the redirect), never 403. Scripts and non-browsers get the 401 problem with `WWW-Authenticate`.

Only 200, 401 and 403 are answered (and those redirects): nginx's `auth_request` turns any other status into a
500 for the client, so a request that cannot be judged (a malformed path or method, a missing org) is a 403 whose
`X-Gateway-Reason` header, body (`reason`) and audit line say why. So is a request carrying X-Gateway-*
headers of its own: a proxy that does not strip them (nginx cannot, by pattern) would pass them upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from gateway.access.audit import AuditEvent
from gateway.access.browser import own_origin, request_url
from gateway.access.credentials import TOKENS_AND_KEYS
from gateway.access.decisions import enforce
from gateway.access.peer import TrustedProxies, resolve_peer
from gateway.errors import BadRequest, Forbidden, GatewayError, InvalidPath
from gateway.identity.tokens import Principal
from gateway.paths import canonical_path, second_reading
from gateway.policy import HotState
from gateway.proxy.headers import IDENTITY_NAMES
from gateway.proxy.match import RouteTable
from gateway.proxy.resolve import ORG_HEADER, decide_org
from gateway.settings import DEFAULT_IDENTITY_HEADERS, Settings
from gateway.tracing import RequestTrace

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DESCRIBING = frozenset(
    {
        b"x-forwarded-method",
        b"x-forwarded-uri",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-original-url",
        b"x-original-method",
        b"authorization",
        b"x-api-key",
        ORG_HEADER.encode(),
    }
)


@dataclass(frozen=True, slots=True)
class ForwardAuthAnswers:
    """`[forward_auth]`: what `/authz/forward` accepts and what an allowing answer carries."""

    accepts: frozenset[str] = TOKENS_AND_KEYS
    identity: tuple[str, ...] = DEFAULT_IDENTITY_HEADERS
    audience: str | None = None
    """Also answer with the signed identity JWT for this audience; None: not."""

    @property
    def cookie(self) -> bool:
        return "cookie" in self.accepts

    @classmethod
    def from_settings(cls, settings: Settings) -> ForwardAuthAnswers:
        forward = settings.forward_auth
        return cls(
            accepts=frozenset(forward.auth),
            identity=forward.identity_headers or settings.identity_headers,
            audience=forward.audience if forward.identity_token else None,
        )


def nginx_mode(query: bytes) -> bool:
    """`/authz/forward?mode=nginx`: a browser without a session gets 401 with Location, never a redirect."""
    if not query:
        return False
    return parse_qs(query.decode("latin-1")).get("mode") == ["nginx"]


class SpoofedIdentity(BadRequest):
    """The described request carries X-Gateway-* headers of its own (answered 403, see the module docstring)."""

    slug = "spoofed-identity-header"
    title = "Identity header sent by the client"


@dataclass(frozen=True, slots=True)
class Described:
    """The original request as the fronting proxy describes it."""

    method: str
    path: str
    authorization: str | None
    org: str | None
    api_key: str | None
    client_ip: str
    """The original caller, from the proxy's X-Forwarded-For (see the module docstring)."""
    host: str | None = None
    """X-Forwarded-Host as the proxy sent it (the gateway's own Host is never the described request's)."""
    url: str | None = None
    """The original request's absolute URL (the return URL after sign-in), when the proxy says it."""
    origin: str | None = None
    """The original request's origin (scheme and host), for the cross-site check of cookie requests."""


def describe(peer_ip: str, raw: list[tuple[bytes, bytes]], trusted: TrustedProxies) -> Described:
    if not trusted.trusts(peer_ip):
        raise Forbidden("forward-auth answers only the proxies listed in trusted_proxies")
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name.startswith(IDENTITY_NAMES):
            # The proxy in front passes the client's headers on to its upstream; the gateway cannot strip them
            # there, so a request that carries its own identity headers is not allowed at all.
            raise SpoofedIdentity(f"{name.decode('latin-1')}: only the gateway writes X-Gateway-* headers")
        if name in _DESCRIBING:
            if name in found:
                raise BadRequest(f"{name.decode()}: sent more than once")
            found[name] = value.decode("latin-1")
    method = (found.get(b"x-forwarded-method") or found.get(b"x-original-method", "")).upper()
    original = _original_url(found.get(b"x-original-url"))
    uri = found.get(b"x-forwarded-uri")
    if uri is None and original is not None:
        uri = original[2]
    if method not in METHODS:
        raise BadRequest("X-Forwarded-Method: missing or not an HTTP method")
    if uri is None:
        raise BadRequest("X-Forwarded-Uri: missing")
    # The query is not part of the decision; a fragment never reaches a server and is refused if present.
    target = uri.split("?", 1)[0]
    if "#" in target:
        raise InvalidPath("X-Forwarded-Uri: a fragment is not part of a request target")
    path = canonical_path(target.encode("latin-1"))
    reason = second_reading(path)  # no route here to opt out: the strict reading always applies
    if reason is not None:
        raise InvalidPath(f"X-Forwarded-Uri: {reason}")
    client_ip = resolve_peer(peer_ip, "http", raw, trusted).client_ip
    if original is not None:
        scheme, host, target = original
    else:
        scheme = (found.get(b"x-forwarded-proto") or "").strip().lower()
        host, target = (found.get(b"x-forwarded-host") or "").strip(), uri
    known = scheme in ("http", "https") and bool(host)
    # Routes by host read X-Forwarded-Host, else the host of X-Original-URL (the gateway's own Host never).
    route_host = found.get(b"x-forwarded-host") or (original[1] if original is not None else None)
    return Described(
        method,
        path,
        found.get(b"authorization"),
        found.get(ORG_HEADER.encode()),
        found.get(b"x-api-key"),
        client_ip,
        route_host,
        url=request_url(scheme, host, target) if known else None,
        origin=own_origin(scheme, host) if known else None,
    )


def _original_url(value: str | None) -> tuple[str, str, str] | None:
    """X-Original-URL (nginx: `$scheme://$http_host$request_uri`) as (scheme, host, path and query)."""
    if value is None:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError as exc:
        raise BadRequest("X-Original-URL: not a URL") from exc
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise BadRequest("X-Original-URL: an absolute http(s) URL without a fragment")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.netloc, target


FORWARD_ROUTE = "forward-auth"
"""The route name forward-auth decisions carry in shadow reports."""


def decide_described(
    state: HotState,
    described: Described,
    principal: Principal,
    event: AuditEvent,
    trace: RequestTrace | None = None,
    *,
    routes: RouteTable | None = None,
) -> tuple[str, str]:
    """(org, roles) for an allowed request by an authenticated caller; raises 403 errors otherwise. The audit
    event learns the org as soon as it is known, so a denial names it too; `trace` learns each stage."""
    key = principal.key
    if trace is not None:
        trace.stage("resolve")
    host = routes.host_of(described.host) if routes is not None else None
    route = routes.find(described.path, host) if routes is not None else None
    bound = key.org if key is not None else principal.org  # an API key's org, or an outside token's org claim
    org = decide_org(state, route, described.path, host, described.org, bound)
    event.org = org.slug
    if trace is not None:
        trace.stage("enforce")
    enforce(state, principal.subject, org.slug, described.path, described.method, key=key, route=FORWARD_ROUTE)
    return org.slug, ",".join(state.roles_of(principal.subject, org.slug))


def as_forward_auth_answer(error: GatewayError) -> GatewayError:
    """401 and 403 as they are; anything else a 403 naming the original problem (see the module docstring)."""
    if error.status in (401, 403):
        return error
    return Forbidden(
        f"the request cannot be judged: {error.detail}",
        headers={"x-gateway-reason": error.slug},
        reason=error.slug,
    )
