"""Stage 1, route match: by host, then the longest configured prefix (on whole segments); no match is 404.

Routes with `hosts` are looked up by the request's host (exact names first, then the one wildcard pattern a host
can fit: `*.` + everything after its first label), routes without by path alone. The host is read, and a
malformed one refused (400), only when some route depends on it; without such routes matching is by path, as
it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gateway.errors import InvalidPath, NotFound
from gateway.hosts import configured_host, host_template, normalise_host
from gateway.namespace import reserved
from gateway.paths import canonical_path, second_reading
from gateway.proxy.cors import CorsPolicy
from gateway.settings import ConfigError, Route, Upstream, path_template


@dataclass(frozen=True, slots=True)
class OrgSource:
    """Where a route's organization comes from (`org_from` and its option), ready to read."""

    kind: str
    """header, path, host or default."""
    path: tuple[str | None, ...] = (None,)
    """org_path's segments after the prefix, None in the slug's place."""
    host: tuple[str, ...] = ()
    """org_host's labels, one of them `{org}`."""
    fixed: str = ""
    """The `org` of a default route."""

    @classmethod
    def of(cls, route: Route) -> OrgSource:
        return cls(
            kind=route.org_from,
            path=path_template(route.org_path) if route.org_path is not None else (None,),
            host=host_template(route.org_host) if route.org_host is not None else (),
            fixed=route.org or "",
        )


HEADER_ORG = OrgSource("header")


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its upstream URL split and its timeouts resolved."""

    prefix: str
    name: str
    """The route in audit lines, metrics and pools: its prefix, after its hosts when it has any."""
    hosts: tuple[str, ...]
    """Exact names and `*.` wildcards, normalised (gateway/hosts.py)."""
    scheme: str
    host: str
    port: int
    base_path: str
    strip_prefix: bool
    public: bool
    org: OrgSource
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
    host: str | None = None
    """The request's host, normalised, when the route table reads hosts (None otherwise, or when none sent)."""


def route_name(route: Route) -> str:
    """A route's name in audit, metrics and per-route tables: its prefix, after its hosts when it has any."""
    hosts = tuple(configured_host(host) for host in route.hosts)
    return ",".join(hosts) + route.prefix if hosts else route.prefix


def compile_route(route: Route, defaults: Upstream) -> CompiledRoute:
    if route.prefix != "/" and canonical_path(route.prefix.encode()) != route.prefix:
        raise ConfigError(f"routes: prefix {route.prefix!r} is not in canonical form")
    parts = urlsplit(route.upstream)
    assert parts.hostname is not None  # checked by settings validation
    base = parts.path.rstrip("/")
    if base and canonical_path(base.encode()) != base:
        raise ConfigError(f"routes: upstream path {parts.path!r} is not in canonical form")
    hosts = tuple(configured_host(host) for host in route.hosts)
    return CompiledRoute(
        prefix=route.prefix,
        name=route_name(route),
        hosts=hosts,
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        base_path=base,
        strip_prefix=route.strip_prefix,
        public=route.public,
        org=OrgSource.of(route),
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


_HOSTS_SEEN_MAX = 4096


def _longest_first(routes: list[CompiledRoute]) -> list[CompiledRoute]:
    return sorted(routes, key=lambda route: len(route.prefix), reverse=True)


class RouteTable:
    def __init__(self, routes: tuple[Route, ...], defaults: Upstream) -> None:
        compiled = [compile_route(route, defaults) for route in routes]
        self._routes = _longest_first(compiled)
        self._anyhost = [route for route in self._routes if not route.hosts]
        by_host: dict[str, list[CompiledRoute]] = {}
        for route in self._routes:  # longest prefix first within each host, too
            for host in route.hosts:
                by_host.setdefault(host, []).append(route)
        self._by_host = by_host
        self.reads_host = bool(by_host) or any(route.org.kind == "host" for route in compiled)
        """Some route depends on the host: requests' hosts are normalised (and a malformed one refused)."""
        self._hosts_seen: dict[str, str | None] = {}
        """Hosts already normalised: the same few arrive again and again. Bounded: emptied when full; a malformed
        host is never kept (it raises)."""

    @property
    def routes(self) -> list[CompiledRoute]:
        return list(self._routes)

    def find(self, path: str, host: str | None) -> CompiledRoute | None:
        """The route for `path` on `host` (normalised), or None: exact host, then wildcard, then any host."""
        if host is not None and self._by_host:
            wildcard = "*." + host.partition(".")[2] if "." in host else None
            for candidates in (self._by_host.get(host), self._by_host.get(wildcard) if wildcard else None):
                for route in candidates or ():
                    if path.startswith(route.below) or path == route.prefix:
                        return route
        for route in self._anyhost:  # the hot loop: inline, no call per route
            if path.startswith(route.below) or path == route.prefix:
                return route
        return None

    def host_of(self, value: str | None) -> str | None:
        """The request's host normalised when some route reads it; None otherwise. Raises MalformedHost."""
        if not self.reads_host or value is None:
            return None
        known = self._hosts_seen.get(value)
        if known is None:
            known = normalise_host(value)
            if len(self._hosts_seen) >= _HOSTS_SEEN_MAX:
                self._hosts_seen.clear()
            self._hosts_seen[value] = known
        return known

    def match(self, path: str, host: str | None = None) -> RouteMatch:
        """The route for a proxied request; `host` is its Host as the trusted proxies let us see it (raw)."""
        if reserved(path):
            raise NotFound("no such endpoint")  # the gateway's own paths are never forwarded, even by `/`
        seen_host = self.host_of(host)
        route = self.find(path, seen_host)
        if route is None:
            raise NotFound("no route matches this path")
        if route.strict_paths and (reason := second_reading(path)):
            raise InvalidPath(reason)
        rest = path
        if route.strip_prefix and route.prefix != "/":
            rest = path[len(route.prefix) :] or "/"
        return RouteMatch(route=route, path=path, upstream_path=route.base_path + rest, host=seen_host)
