"""/.well-known/jwks.json: the public signing keys, for upstreams verifying X-Gateway-Identity."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from gateway.identity.tokens import TokenService


@get("/.well-known/jwks.json")
async def jwks(tokens: NamedDependency[TokenService]) -> Response[dict[str, list[dict[str, str]]]]:
    """Public keys only, with `kid`, `alg` and `use`; a rotated-out key stays listed while tokens signed
    with it can still be valid."""
    return Response(tokens.jwks(), headers={"cache-control": "public, max-age=300"})
