"""Stage 1, route match: the longest configured prefix (on whole segments) wins; no match is 404."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gateway.errors import InvalidPath, NotFound
from gateway.namespace import reserved
from gateway.paths import canonical_path, second_reading
from gateway.proxy.cors import CorsPolicy
from gateway.settings import ConfigError, Route, Upstream


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its upstream URL split and its timeouts resolved."""

    prefix: str
    scheme: str
    host: str
    port: int
    base_path: str
    strip_prefix: bool
    public: bool
    org_from: str
    timeout: aiohttp.ClientTimeout
    max_body_bytes: int
    identity_token: bool
    retries: int
    pool_size: int | None
    cors: CorsPolicy | None
    audience: str
    """The upstream's origin (scheme://host:port): the `aud` of identity tokens for this route."""
    below: str
    """`prefix` + "/": paths under the route start with it (`/` for the catch-all)."""
    strict_paths: bool


@dataclass(slots=True)  # made per request: frozen would cost an object.__setattr__ per field
class RouteMatch:
    route: CompiledRoute
    path: str
    """The canonical request path: what Casbin evaluates."""
    upstream_path: str
    """Exactly what the upstream receives: `path`, minus the prefix when stripping, under the base path."""


def compile_route(route: Route, defaults: Upstream) -> CompiledRoute:
    if route.prefix != "/" and canonical_path(route.prefix.encode()) != route.prefix:
        raise ConfigError(f"routes: prefix {route.prefix!r} is not in canonical form")
    parts = urlsplit(route.upstream)
    assert parts.hostname is not None  # checked by settings validation
    base = parts.path.rstrip("/")
    if base and canonical_path(base.encode()) != base:
        raise ConfigError(f"routes: upstream path {parts.path!r} is not in canonical form")
    return CompiledRoute(
        prefix=route.prefix,
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        base_path=base,
        strip_prefix=route.strip_prefix,
        public=route.public,
        org_from=route.org_from,
        max_body_bytes=route.max_body_bytes if route.max_body_bytes is not None else defaults.max_body_bytes,
        identity_token=route.identity_token,
        retries=max(route.retries, 0),
        pool_size=route.pool_size,
        cors=CorsPolicy.compile(route.cors) if route.cors is not None else None,
        audience=f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}",
        below=route.prefix if route.prefix == "/" else route.prefix + "/",
        strict_paths=route.strict_paths,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=route.connect_timeout or defaults.connect_timeout,
            sock_read=route.read_timeout or defaults.read_timeout,
        ),
    )


class RouteTable:
    def __init__(self, routes: tuple[Route, ...], defaults: Upstream) -> None:
        compiled = [compile_route(route, defaults) for route in routes]
        self._routes = sorted(compiled, key=lambda route: len(route.prefix), reverse=True)

    @property
    def routes(self) -> list[CompiledRoute]:
        return list(self._routes)

    def match(self, path: str) -> RouteMatch:
        if reserved(path):
            raise NotFound("no such endpoint")  # the gateway's own paths are never forwarded, even by `/`
        for route in self._routes:
            prefix = route.prefix
            if path.startswith(route.below) or path == prefix:
                if route.strict_paths and (reason := second_reading(path)):
                    raise InvalidPath(reason)
                rest = path
                if route.strip_prefix and prefix != "/":
                    rest = path[len(prefix) :] or "/"
                return RouteMatch(route=route, path=path, upstream_path=route.base_path + rest)
        raise NotFound("no route matches this path")
