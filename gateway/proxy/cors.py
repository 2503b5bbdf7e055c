"""CORS per route: the gateway answers preflights itself and owns the Access-Control-* response headers.

A preflight (OPTIONS with Origin and Access-Control-Request-Method) on a route with `[routes.cors]` is answered
here, without credentials and without reaching the upstream. On such a route the upstream's own Access-Control-*
headers are replaced by the gateway's, so the browser sees one policy. Routes without `cors` get no special
treatment: an OPTIONS request is authenticated and authorized like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import Forbidden
from gateway.settings import Cors

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]
    any_origin: bool
    methods: bytes
    allowed_methods: frozenset[str]
    headers: frozenset[str]
    expose: bytes
    credentials: bool
    max_age: bytes

    @classmethod
    def compile(cls, cors: Cors) -> CorsPolicy:
        return cls(
            origins=frozenset(cors.allow_origins),
            any_origin="*" in cors.allow_origins,
            methods=", ".join(cors.allow_methods).encode(),
            allowed_methods=frozenset(cors.allow_methods),
            headers=frozenset(header.lower() for header in cors.allow_headers),
            expose=", ".join(cors.expose_headers).encode(),
            credentials=cors.allow_credentials,
            max_age=str(cors.max_age).encode(),
        )

    def _allow_origin(self, origin: str | None) -> bytes | None:
        if origin is None:
            return None
        if origin in self.origins:
            return origin.encode("latin-1")
        return b"*" if self.any_origin else None

    def preflight(self, raw: Headers) -> Headers | None:
        """Response headers for a preflight, None if this is not one; Forbidden if it asks for too much."""
        origin = method = None
        requested: list[str] = []
        for name, value in raw:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                method = value.decode("latin-1")
            elif name == b"access-control-request-headers":
                requested.extend(h.strip().lower() for h in value.decode("latin-1").split(",") if h.strip())
        if origin is None or method is None:
            return None
        allowed = self._allow_origin(origin)
        if allowed is None or method not in self.allowed_methods or not set(requested) <= self.headers:
            raise Forbidden("CORS preflight refused: origin, method or headers not allowed on this route")
        headers = [
            (b"access-control-allow-origin", allowed),
            (b"access-control-allow-methods", self.methods),
            (b"access-control-max-age", self.max_age),
            (b"vary", b"Origin"),
        ]
        if requested:
            headers.append((b"access-control-allow-headers", ", ".join(sorted(set(requested))).encode()))
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def response_headers(self, raw: Headers) -> Headers:
        """Access-Control-* headers for an actual (non-preflight) response to an allowed origin."""
        origin = next((value.decode("latin-1") for name, value in raw if name == b"origin"), None)
        allowed = self._allow_origin(origin)
        if allowed is None:
            return [(b"vary", b"Origin")]
        headers = [(b"access-control-allow-origin", allowed), (b"vary", b"Origin")]
        if self.expose:
            headers.append((b"access-control-expose-headers", self.expose))
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers
