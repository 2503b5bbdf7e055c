"""Runs the stages in order; the only module that knows the order.

    1 match            proxy/match.py
    2 authenticate     access/credentials.py   (shared with the control plane)
    3 resolve org      proxy/resolve.py (+ proxy/limit.py)
    4 enforce          access/decisions.py     (shared with the control plane)
    5 forward          proxy/forward.py
    6 audit            access/audit.py         (shared with the control plane)

The front door (gateway/asgi.py) calls `proxy` with the canonical path; it runs them for HTTP, and WebSocket
handshakes (websocket.py) and forward-auth (forward_auth.py) reuse stages 2-4 and end differently. A stage stops a
request only by raising a GatewayError, written here as problem+json. Nothing here touches Litestar.

With `[tracing]` on, each HTTP request and forward-auth decision gets a span, and each stage a child span
(gateway/tracing/); with it off `tracing` is None, and a request's only cost is testing that once per stage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import cast

import aiohttp

from gateway.access.audit import AuditEvent, AuditSink, milliseconds
from gateway.access.browser import check_same_origin, own_origin, request_url
from gateway.access.credentials import CookieSession, authenticate_caller
from gateway.access.decisions import Denied, enforce
from gateway.access.peer import Peer, TrustedProxies, resolve_peer
from gateway.access.request_ids import request_id_of
from gateway.asgitypes import Receive, Scope, Send
from gateway.errors import GatewayError, Unauthenticated, send_problem
from gateway.identity.outside import OutsideTokens, SigningKeyUnknown
from gateway.identity.tokens import Principal, TokenService
from gateway.metrics import Metrics
from gateway.namespace import FORWARD_AUTH_PATH
from gateway.policy import HotState, KeyRecord
from gateway.proxy.browsers import DEFAULT_ACCESS, BrowserCall, Browsers, RouteAccess, send_to_sign_in
from gateway.proxy.forward import ClientGone, UpstreamBroke, forward, request_has_body
from gateway.proxy.forward_auth import (
    Described,
    ForwardAuthAnswers,
    as_forward_auth_answer,
    decide_described,
    describe,
    nginx_mode,
)
from gateway.proxy.headers import RequestHead, read_head, request_headers
from gateway.proxy.identity import Directory, identity_headers, needs_directory
from gateway.proxy.limit import RateLimiter
from gateway.proxy.match import RouteMatch, RouteTable
from gateway.proxy.resolve import resolve_org
from gateway.proxy.websocket import proxy_websocket, refuse_websocket
from gateway.tracing import RequestTrace, Tracing

log = logging.getLogger("gateway.proxy")


@dataclass(slots=True)
class Admitted:
    """What stages 2-4 established about an admitted request."""

    identity: tuple[tuple[str, str], ...]
    subject: str | None
    org: str | None
    key: KeyRecord | None
    expires_at: float | None = None
    """When the caller's credential expires (epoch seconds): a WebSocket is closed then."""
    session_id: str | None = None
    """The login behind an access token or the session cookie: a WebSocket is closed when it ends."""
    set_cookie: str | None = None
    """A re-issued session cookie (Set-Cookie value) for the answer: the browser was active."""


@dataclass(slots=True)
class Pipeline:
    """Long-lived parts the stages need; built once by the app's lifespan."""

    routes: RouteTable
    tokens: TokenService
    state: HotState
    http: aiohttp.ClientSession
    audit: AuditSink
    metrics: Metrics
    pools: dict[str, aiohttp.ClientSession]
    """Routes with their own `pool_size`, by name (CompiledRoute.name); every other route uses `http`."""
    limiter: RateLimiter
    allow_underscore_headers: bool
    max_header_bytes: int
    trusted_proxies: TrustedProxies
    key_usage: dict[str, float] = field(default_factory=dict)
    """API key id -> last use (epoch seconds), drained by the runtime's batch writer."""
    session_usage: dict[str, float] = field(default_factory=dict)
    """Session id -> last use by its cookie (epoch seconds), drained by the same writer into `last_used_at`."""
    access: dict[str, RouteAccess] = field(default_factory=dict)
    """Each route's `auth` and identity headers, by route name (routes not listed: tokens and keys, the default)."""
    browsers: Browsers | None = None
    """`[browser]` when enabled: the session cookie and sign-in redirects; None otherwise."""
    directory: Directory | None = None
    """Users' email and name, when a configured identity header needs them."""
    forward_answers: ForwardAuthAnswers = field(default_factory=ForwardAuthAnswers)
    """What `/authz/forward` accepts and answers with (`[forward_auth]`)."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    """The loop serving this process (built inside it)."""
    tracing: Tracing | None = None
    """Spans for every request when `[tracing]` is on; None otherwise, and then nothing is traced."""
    outside: OutsideTokens | None = None
    """Access tokens of `[[trusted_issuers]]` (None without any)."""

    async def admit(
        self,
        match: RouteMatch,
        path: str,
        method: str,
        authorization: str | None,
        org_header: str | None,
        api_key: str | None,
        event: AuditEvent,
        trace: RequestTrace | None = None,
        browser: BrowserCall | None = None,
    ) -> Admitted:
        """Stages 2-4 for a request (HTTP or WebSocket handshake): authenticate, resolve the org (then the
        rate limits), enforce; returns the identity headers for the upstream. Raises a GatewayError to stop.
        `browser` is set on routes accepting the session cookie."""
        if match.route.public:
            event.granted, event.reason = True, "public route"
            return Admitted((), None, None, None)
        access = self.access.get(match.route.name, DEFAULT_ACCESS)
        # The client address, through trusted proxies, resolved on arrival (`arrival`): keys' allow-lists use it.
        client_ip = event.client_ip or ""
        if trace is not None:
            trace.stage("authenticate")
        cookie_value = browser.cookie if browser is not None else None
        principal, cookie = await self._caller(authorization, api_key, cookie_value, access.accepts, client_ip)  # 2
        event.subject = principal.subject
        if cookie is not None:
            self._cookie_used(principal.session_id, method, browser)
        key = principal.key
        if trace is not None:
            trace.stage("resolve")
        org = resolve_org(self.state, match, org_header, key.org if key else principal.org)  # 3
        event.org = org.slug
        if self.limiter.active:
            await self.limiter.check(principal.user_id, org.slug, key.key_id if key else None)
        if trace is not None:
            trace.stage("enforce")
        decision = enforce(self.state, principal.subject, org.slug, path, method, key=key, route=match.route.name)  # 4
        event.granted, event.reason = True, decision.reason
        if key is not None:
            self.key_usage[key.key_id] = time.time()  # written in batches, never per request
        roles = ",".join(self.state.roles_of(principal.subject, org.slug))
        person = None
        if access.lookup and self.directory is not None and principal.has_account:  # email or name: from memory
            person = await self.directory.lookup(principal.user_id)
        identity = identity_headers(
            access.identity, user_id=principal.user_id, org=org.slug, roles=roles, person=person
        )
        if match.route.identity_token:
            token = self.tokens.identity_token(
                user_id=principal.user_id,
                org=org.slug,
                roles=roles,
                audience=match.route.audience,
                key_id=key.key_id if key else None,
            )
            identity = (*identity, ("x-gateway-identity", token))
        if cookie is None:
            return Admitted(identity, principal.subject, org.slug, key, principal.expires_at, principal.session_id)
        # A connection opened with the cookie lasts while its session does (revocation closes it sooner).
        set_cookie = self._refreshed(principal, cookie)
        return Admitted(identity, principal.subject, org.slug, None, cookie.not_after, principal.session_id, set_cookie)

    async def _caller(
        self,
        authorization: str | None,
        api_key: str | None,
        cookie: str | None,
        accepts: Collection[str],
        client_ip: str,
    ) -> tuple[Principal, CookieSession | None]:
        """Stage 2: the caller, by the credentials the endpoint accepts. An outside token whose `kid` is unknown
        waits for the issuer's one shared, throttled key-set refetch (at most 5 s), then is decided once more."""
        attempt = functools.partial(
            authenticate_caller,
            self.tokens,
            authorization,
            api_key=api_key,
            cookie=cookie,
            accepts=accepts,
            state=self.state,
            client_ip=client_ip,
            outside=self.outside,
        )
        try:
            return attempt()
        except SigningKeyUnknown as unknown:
            await unknown.refetch()
        return attempt()

    def _cookie_used(self, session_id: str | None, method: str, browser: BrowserCall | None) -> None:
        """A request authenticated by the session cookie: refused if another site could have sent it (CSRF,
        and Cross-Site WebSocket Hijacking), else its session's last use is noted (written in batches)."""
        assert browser is not None
        assert self.browsers is not None
        assert session_id is not None
        check_same_origin(
            method, browser.head, browser.own_origin, self.browsers.allowed_origins, websocket=browser.websocket
        )
        self.session_usage[session_id] = time.time()

    def _refreshed(self, principal: Principal, cookie: CookieSession) -> str | None:
        assert self.browsers is not None
        return self.browsers.refreshed(self.tokens, principal, cookie)

    def browser_call(
        self, match: RouteMatch, raw: list[tuple[bytes, bytes]], peer: Peer, *, websocket: bool = False
    ) -> BrowserCall | None:
        """The browser side of a request on a route accepting the cookie; None elsewhere (nothing more is read)."""
        if self.browsers is None or not self.access.get(match.route.name, DEFAULT_ACCESS).cookie:
            return None
        return self.browsers.call(raw, own_origin(peer.scheme, peer.host), websocket=websocket)

    def arrival(self, scope: Scope, method: str, path: str) -> tuple[RequestHead, Peer, AuditEvent]:
        """What every proxied request (HTTP or WebSocket handshake) starts with: its head read once, the caller
        as the trusted proxies let us see it, and the audit event the stages fill in."""
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        head = read_head(raw, allow_underscores=self.allow_underscore_headers, max_bytes=self.max_header_bytes)
        client = scope.get("client")
        # The connection's own scheme: TLS (https, wss) forwards as https, anything else as http.
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        peer = resolve_peer(client[0] if client else "", scheme, raw, self.trusted_proxies, host=head.host)
        event = AuditEvent(method=method, path=path, client_ip=peer.client_ip, request_id=head.request_id)
        return head, peer, event

    async def forward_auth(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/authz/forward`: the same decision for a request another proxy describes; nothing is forwarded."""
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        trace = None if self.tracing is None else self.tracing.request("gateway forward-auth", scope)
        failure: str | None = None
        raw_headers = cast(list[tuple[bytes, bytes]], scope["headers"])
        client = scope.get("client")
        request_id = request_id_of(raw_headers)
        peer_ip = client[0] if client else ""
        event = AuditEvent(
            method=scope["method"], path="", route=FORWARD_AUTH_PATH, client_ip=peer_ip, request_id=request_id
        )
        answers = self.forward_answers
        browser: BrowserCall | None = None
        described: Described | None = None
        try:
            described = describe(peer_ip, raw_headers, self.trusted_proxies)
            event.method, event.path, event.client_ip = described.method, described.path, described.client_ip
            if answers.cookie and self.browsers is not None:
                browser = self.browsers.call(raw_headers, described.origin)
            if trace is not None:
                trace.stage("authenticate")
            principal, cookie = await self._caller(
                described.authorization,
                described.api_key,
                browser.cookie if browser is not None else None,
                answers.accepts,
                described.client_ip,
            )
            event.subject = principal.subject
            if cookie is not None:
                self._cookie_used(principal.session_id, described.method, browser)
            org, roles = decide_described(self.state, described, principal, event, trace, routes=self.routes)
            person = None
            if self.directory is not None and principal.has_account and needs_directory(answers.identity):
                person = await self.directory.lookup(principal.user_id)
            identity = identity_headers(
                answers.identity, user_id=principal.user_id, org=org, roles=roles, person=person
            )
            if answers.audience is not None:
                key = principal.key
                token = self.tokens.identity_token(
                    user_id=principal.user_id,
                    org=org,
                    roles=roles,
                    audience=answers.audience,
                    key_id=key.key_id if key else None,
                )
                identity = (*identity, ("x-gateway-identity", token))
            event.granted, event.reason, event.status = True, "forward-auth allowed", 200
            headers = [(name.encode(), value.encode("latin-1")) for name, value in identity]
            if cookie is not None and (set_cookie := self._refreshed(principal, cookie)) is not None:
                headers.append((b"set-cookie", set_cookie.encode("latin-1")))
            await _send_empty(send, 200, [*headers, (b"x-request-id", request_id.encode())])
        except Denied as denied:
            failure = denied.slug
            event.granted, event.reason, event.decision_id = False, denied.reason, denied.decision_id
            event.status = await send_problem(send, denied, request_id=request_id)
        except Unauthenticated as error:
            failure = error.slug
            event.granted, event.reason = False, error.audit_reason
            if self.browsers is not None and browser is not None and described is not None:
                # a browser is sent to sign in, a script gets the 401 (module forward_auth)
                event.status = await send_to_sign_in(
                    self.browsers,
                    send,
                    error,
                    browser,
                    method=described.method,
                    return_url=described.url,
                    other_credential=described.authorization is not None or described.api_key is not None,
                    request_id=request_id,
                    forward_auth=True,
                    nginx=nginx_mode(scope.get("query_string", b"")),
                )
            else:
                event.status = await send_problem(send, error, request_id=request_id)
        except GatewayError as error:
            failure = error.slug
            answer = as_forward_auth_answer(error)
            reason = error.audit_reason if answer is error else f"{error.slug}: {error.detail}"
            event.granted, event.reason = False, reason
            event.status = await send_problem(send, answer, request_id=request_id)
        finally:
            event.duration_ms = milliseconds(started)
            self.audit.emit(event)
            self.metrics.observe(event)
            if trace is not None:
                trace.finish(event, failure)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, error: GatewayError, *, path: str = "") -> None:
        """Answer a request the front door turned away before any stage (a path with no canonical form, an
        endpoint of the other listener): the problem response, one audit line, the metrics (and a trace: HTTP
        only, as WebSocket connections are not traced)."""
        http = scope["type"] == "http"
        trace = None if self.tracing is None or not http else self.tracing.request("gateway proxy", scope)
        raw_headers = cast(list[tuple[bytes, bytes]], scope["headers"])
        request_id = request_id_of(raw_headers)
        client = scope.get("client")
        method = scope["method"] if http else "WEBSOCKET"
        event = AuditEvent(method=method, path=path, client_ip=client[0] if client else "", request_id=request_id)
        event.granted, event.reason = False, error.audit_reason
        if http:
            event.status = await send_problem(send, error, request_id=request_id)
        elif scope["type"] == "websocket":
            event.status = await refuse_websocket(scope, receive, send, error, request_id)
        self.audit.emit(event)
        self.metrics.observe(event)
        if trace is not None:
            trace.finish(event, error.slug)

    async def proxy(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Stages 1-6 for a request whose canonical path is `path`."""
        if scope["type"] == "websocket":
            await proxy_websocket(self, scope, receive, send, path)
            return
        started = time.perf_counter()
        trace = None if self.tracing is None else self.tracing.request("gateway proxy", scope)
        failure: str | None = None
        method: str = scope["method"]
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]  # servers hand over a list
        head, peer, event = self.arrival(scope, method, path)
        request_id = head.request_id
        cors: list[tuple[bytes, bytes]] = []
        browser: BrowserCall | None = None
        try:
            match = self.routes.match(path, peer.host)  # 1
            route = match.route
            event.route = route.name
            if route.cors is not None:
                preflight = route.cors.preflight(raw_headers) if method == "OPTIONS" else None
                if preflight is not None:  # answered here: no credentials, nothing forwarded
                    event.granted, event.reason, event.status = True, "CORS preflight", 204
                    await _send_empty(send, 204, [*preflight, (b"x-request-id", request_id.encode())])
                    return
                cors = route.cors.response_headers(raw_headers)
            if head.error is not None:
                raise head.error
            has_body = request_has_body(head.content_length, head.chunked, route.max_body_bytes)
            browser = self.browser_call(match, raw_headers, peer)
            admitted = await self.admit(
                match, path, method, head.authorization, head.org, head.api_key, event, trace, browser
            )  # 2-4
            headers = request_headers(
                head,
                raw_headers,
                keep_authorization=route.public,
                has_body=has_body,
                identity=admitted.identity,
                peer=peer,
                request_id=request_id,
            )
            if self.browsers is not None:
                headers = self.browsers.strip_from(headers)
            if trace is not None:
                headers = trace.forward(headers, method=method, host=route.host, port=route.port)
            answer_headers = cors
            if admitted.set_cookie is not None:
                answer_headers = [*cors, (b"set-cookie", admitted.set_cookie.encode("latin-1"))]
            stats = self.metrics.route(route.name)
            stats.in_flight += 1
            forwarding = time.perf_counter()
            try:
                event.upstream_status = event.status = await forward(  # 5
                    self.pools.get(route.name, self.http),
                    match,
                    loop=self.loop,
                    method=method,
                    query=scope.get("query_string", b""),
                    headers=headers,
                    has_body=has_body,
                    receive=receive,
                    send=send,
                    request_id=request_id,
                    extra_response_headers=answer_headers,
                )
            finally:
                stats.in_flight -= 1
                event.upstream_ms = milliseconds(forwarding)
        except Denied as denied:
            failure = denied.slug
            event.granted, event.reason, event.decision_id = False, denied.reason, denied.decision_id
            event.status = await send_problem(send, denied, request_id=request_id, extra=cors)
        except GatewayError as error:
            failure = error.slug
            if event.granted is None:
                event.granted, event.reason = False, error.audit_reason
            if self.browsers is not None and browser is not None and isinstance(error, Unauthenticated):
                event.status = await send_to_sign_in(
                    self.browsers,
                    send,
                    error,
                    browser,
                    method=method,
                    return_url=request_url(peer.scheme, peer.host, _target(scope)),
                    other_credential=head.authorization is not None or head.api_key is not None,
                    request_id=request_id,
                    extra=cors,
                )
            else:
                event.status = await send_problem(send, error, request_id=request_id, extra=cors)
        except ClientGone:
            failure = "client-disconnected"
            event.reason, event.status = "client disconnected", 499
        except UpstreamBroke:
            failure = "upstream-broke"
            event.reason = "upstream failed mid-response"
            log.warning("upstream failed after the response started", extra={"route": event.route})
        finally:
            event.duration_ms = milliseconds(started)
            self.audit.emit(event)  # 6
            self.metrics.observe(event)
            if trace is not None:
                trace.finish(event, failure)


def _target(scope: Scope) -> str:
    """The request target as the client sent it (path and query)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return (raw_path + (b"?" + query if query else b"")).decode("latin-1")


async def _send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"cache-control", b"no-store"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
