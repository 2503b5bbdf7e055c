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
import logging
import time
from dataclasses import dataclass, field
from typing import cast

import aiohttp

from gateway.access.audit import AuditEvent, AuditSink, milliseconds
from gateway.access.credentials import authenticate
from gateway.access.decisions import Denied, enforce
from gateway.access.peer import Peer, TrustedProxies, resolve_peer
from gateway.access.request_ids import request_id_of
from gateway.asgitypes import Receive, Scope, Send
from gateway.errors import GatewayError, send_problem
from gateway.identity.outside import OutsideTokens, SigningKeyUnknown
from gateway.identity.tokens import TokenService
from gateway.metrics import Metrics
from gateway.namespace import FORWARD_AUTH_PATH
from gateway.policy import HotState, KeyRecord
from gateway.proxy.forward import ClientGone, UpstreamBroke, forward, request_has_body
from gateway.proxy.forward_auth import as_forward_auth_answer, decide_described, describe
from gateway.proxy.headers import RequestHead, read_head, request_headers
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
    """The login behind an access token: a WebSocket is closed when it ends."""


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
    """Routes with their own `pool_size`, by prefix; every other route uses `http`."""
    limiter: RateLimiter
    allow_underscore_headers: bool
    max_header_bytes: int
    trusted_proxies: TrustedProxies
    key_usage: dict[str, float] = field(default_factory=dict)
    """API key id -> last use (epoch seconds), drained by the runtime's batch writer."""
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
    ) -> Admitted:
        """Stages 2-4 for a request (HTTP or WebSocket handshake): authenticate, resolve the org (then the
        rate limits), enforce; returns the identity headers for the upstream. Raises a GatewayError to stop."""
        if match.route.public:
            event.granted, event.reason = True, "public route"
            return Admitted((), None, None, None)
        # The client address, through trusted proxies, resolved on arrival (`arrival`): keys' allow-lists use it.
        client_ip = event.client_ip or ""
        if trace is not None:
            trace.stage("authenticate")
        try:
            principal = authenticate(  # 2
                self.tokens, authorization, api_key=api_key, state=self.state, client_ip=client_ip, outside=self.outside
            )
        except SigningKeyUnknown as unknown:  # an outside token's kid: one shared, throttled refetch (≤ 5 s)
            await unknown.refetch()
            principal = authenticate(
                self.tokens, authorization, api_key=api_key, state=self.state, client_ip=client_ip, outside=self.outside
            )
        event.subject = principal.subject
        key = principal.key
        if trace is not None:
            trace.stage("resolve")
        org = resolve_org(self.state, match, org_header, key.org if key else principal.org)  # 3
        event.org = org.slug
        if self.limiter.active:
            await self.limiter.check(principal.user_id, org.slug, key.key_id if key else None)
        if trace is not None:
            trace.stage("enforce")
        decision = enforce(
            self.state, principal.subject, org.slug, path, method, key=key, route=match.route.prefix
        )  # 4
        event.granted, event.reason = True, decision.reason
        if key is not None:
            self.key_usage[key.key_id] = time.time()  # written in batches, never per request
        roles = ",".join(self.state.roles_of(principal.subject, org.slug))
        identity: tuple[tuple[str, str], ...] = (
            ("x-gateway-user", principal.user_id),
            ("x-gateway-org", org.slug),
            ("x-gateway-roles", roles),
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
        return Admitted(identity, principal.subject, org.slug, key, principal.expires_at, principal.session_id)

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
        try:
            described = describe(peer_ip, raw_headers, self.trusted_proxies)
            event.method, event.path, event.client_ip = described.method, described.path, described.client_ip
            try:
                identity = decide_described(self.tokens, self.state, described, event, trace, self.outside)
            except SigningKeyUnknown as unknown:  # as in `admit`
                await unknown.refetch()
                identity = decide_described(self.tokens, self.state, described, event, trace, self.outside)
            event.granted, event.reason, event.status = True, "forward-auth allowed", 200
            headers = [(name.encode(), value.encode("latin-1")) for name, value in identity]
            await _send_empty(send, 200, [*headers, (b"x-request-id", request_id.encode())])
        except Denied as denied:
            failure = denied.slug
            event.granted, event.reason, event.decision_id = False, denied.reason, denied.decision_id
            event.status = await send_problem(send, denied, request_id=request_id)
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
        try:
            match = self.routes.match(path)  # 1
            route = match.route
            event.route = route.prefix
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
            admitted = await self.admit(
                match, path, method, head.authorization, head.org, head.api_key, event, trace
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
            if trace is not None:
                headers = trace.forward(headers, method=method, host=route.host, port=route.port)
            stats = self.metrics.route(route.prefix)
            stats.in_flight += 1
            forwarding = time.perf_counter()
            try:
                event.upstream_status = event.status = await forward(  # 5
                    self.pools.get(route.prefix, self.http),
                    match,
                    loop=self.loop,
                    method=method,
                    query=scope.get("query_string", b""),
                    headers=headers,
                    has_body=has_body,
                    receive=receive,
                    send=send,
                    request_id=request_id,
                    extra_response_headers=cors,
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


async def _send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"cache-control", b"no-store"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
