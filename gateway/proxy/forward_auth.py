"""Forward-auth mode: decisions only, for Traefik ForwardAuth, nginx `auth_request` and Caddy `forward_auth`.

The proxy in front describes the original request with X-Forwarded-Method and X-Forwarded-Uri and passes the
caller's Authorization and X-Org headers; the gateway answers 200 with the identity headers, or 401/403, after
the same canonical-path, authentication, organization and Casbin steps as proxied traffic. Those descriptive
headers are believed only from `trusted_proxies` (a spoofed X-Forwarded-Uri was OAuth2 Proxy's
GHSA-7x63-xv5r-3p2x): from anyone else the answer is 403.

The client is the address the proxy names in X-Forwarded-For (or Forwarded), by the rule of access/peer.py:
what API keys' allow-lists are checked against, and the audit line's `client_ip`. A proxy that sends neither
makes itself the client.

Only 200, 401 and 403 are answered: nginx's `auth_request` turns any other status into a 500 for the client,
so a request that cannot be judged (a malformed path or method, a missing org) is a 403 whose
`X-Gateway-Reason` header, body (`reason`) and audit line say why. So is a request carrying X-Gateway-*
headers of its own: a proxy that does not strip them (nginx cannot, by pattern) would pass them upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.access.audit import AuditEvent
from gateway.access.credentials import authenticate
from gateway.access.decisions import enforce
from gateway.access.peer import TrustedProxies, resolve_peer
from gateway.errors import BadRequest, Forbidden, GatewayError, InvalidPath
from gateway.identity.outside import OutsideTokens
from gateway.identity.tokens import TokenService
from gateway.paths import canonical_path, second_reading
from gateway.policy import HotState
from gateway.proxy.headers import IDENTITY_NAMES
from gateway.proxy.resolve import ORG_HEADER
from gateway.tracing import RequestTrace

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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


def describe(peer_ip: str, raw: list[tuple[bytes, bytes]], trusted: TrustedProxies) -> Described:
    if not trusted.trusts(peer_ip):
        raise Forbidden("forward-auth answers only the proxies listed in trusted_proxies")
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name.startswith(IDENTITY_NAMES):
            # The proxy in front passes the client's headers on to its upstream; the gateway cannot strip them
            # there, so a request that carries its own identity headers is not allowed at all.
            raise SpoofedIdentity(f"{name.decode('latin-1')}: only the gateway writes X-Gateway-* headers")
        if name in (b"x-forwarded-method", b"x-forwarded-uri", b"authorization", b"x-api-key", ORG_HEADER.encode()):
            if name in found:
                raise BadRequest(f"{name.decode()}: sent more than once")
            found[name] = value.decode("latin-1")
    method = found.get(b"x-forwarded-method", "").upper()
    uri = found.get(b"x-forwarded-uri")
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
    return Described(
        method, path, found.get(b"authorization"), found.get(ORG_HEADER.encode()), found.get(b"x-api-key"), client_ip
    )


FORWARD_ROUTE = "forward-auth"
"""The route name forward-auth decisions carry in shadow reports."""


def decide_described(
    tokens: TokenService,
    state: HotState,
    described: Described,
    event: AuditEvent,
    trace: RequestTrace | None = None,
    outside: OutsideTokens | None = None,
) -> tuple[tuple[str, str], ...]:
    """The identity headers for an allowed request; raises 401/403 errors otherwise. The audit event learns the
    subject and the org as soon as they are known, so a denial names them too; `trace` learns each stage."""
    if trace is not None:
        trace.stage("authenticate")
    principal = authenticate(
        tokens,
        described.authorization,
        api_key=described.api_key,
        state=state,
        client_ip=described.client_ip,
        outside=outside,
    )
    event.subject = principal.subject
    key = principal.key
    if trace is not None:
        trace.stage("resolve")
    bound = key.org if key is not None else principal.org  # an API key's org, or an outside token's org claim
    slug = bound if bound is not None else (described.org or "").strip()
    if bound is not None and described.org is not None and described.org.strip() != bound:
        raise Forbidden("not allowed in this organization")
    org = state.org(slug) if slug else None
    if bound is None and described.org is None:
        raise BadRequest("X-Org: the organization slug is needed")
    if org is None:
        raise Forbidden("not allowed in this organization")
    event.org = org.slug
    if trace is not None:
        trace.stage("enforce")
    enforce(state, principal.subject, org.slug, described.path, described.method, key=key, route=FORWARD_ROUTE)
    roles = state.roles_of(principal.subject, org.slug)
    return (
        ("x-gateway-user", principal.user_id),
        ("x-gateway-org", org.slug),
        ("x-gateway-roles", ",".join(roles)),
    )


def as_forward_auth_answer(error: GatewayError) -> GatewayError:
    """401 and 403 as they are; anything else a 403 naming the original problem (see the module docstring)."""
    if error.status in (401, 403):
        return error
    return Forbidden(
        f"the request cannot be judged: {error.detail}",
        headers={"x-gateway-reason": error.slug},
        reason=error.slug,
    )
