"""WebSockets: the same stages as HTTP before the handshake, then a live re-check while the connection lasts.

A handshake is a GET: it is matched, authenticated, resolved and enforced exactly like one, and refused with
an HTTP problem response (401/403/...) before any upgrade. Once open, messages are pumped both ways, and every
`RECHECK_SECONDS` the gateway looks at the policy version; when it moved (membership removed, role changed,
policy edited, user disabled, session ended, a key's allow-list changed) the decision is taken again and a
connection no longer allowed is closed with 1008 (policy violation) and a reason on both sides. So is one whose
access token or API key expires: a connection never outlives the credential that opened it.

On a route accepting the session cookie, a browser's handshake authenticates with it; its `Origin` must then be
the request's own origin or one of `[browser] allowed_origins` (Cross-Site WebSocket Hijacking: browsers send
cookies with any site's handshake), and the connection lasts while the session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, cast

import aiohttp
from yarl import URL

from gateway.access.audit import AuditEvent, milliseconds
from gateway.access.decisions import Denied
from gateway.asgitypes import Message, Receive, Scope, Send
from gateway.errors import GatewayError, send_problem
from gateway.proxy.forward import upstream_errors
from gateway.proxy.headers import request_headers
from gateway.proxy.match import RouteMatch

if TYPE_CHECKING:
    from gateway.proxy.pipeline import Pipeline

RECHECK_SECONDS = 1.0
POLICY_VIOLATION = 1008
NO_LONGER_ALLOWED = "no longer authorized"
EXPIRED = "credential expired"
# The client's handshake headers belong to its connection to us; aiohttp writes its own to the upstream.
HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


async def _refuse(scope: Scope, send: Send, error: GatewayError, request_id: str) -> int:
    """Refuse the handshake with the same problem response as HTTP (ASGI's denial-response extension)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):

        async def as_denial(message: Message) -> None:
            await send({**message, "type": "websocket." + message["type"]})

        await send_problem(as_denial, error, request_id=request_id)
    else:  # the server answers 403 to a close before accept
        await send(_close(POLICY_VIOLATION))
    return error.status


async def refuse_websocket(scope: Scope, receive: Receive, send: Send, error: GatewayError, request_id: str) -> int:
    """Refuse a handshake before any stage ran (the front door's refusals)."""
    if (await receive())["type"] != "websocket.connect":
        return 0
    return await _refuse(scope, send, error, request_id)


def _close(code: int, reason: str | None = None) -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


def _upstream_url(match: RouteMatch, query: bytes) -> URL:
    route = match.route
    return URL.build(
        scheme="wss" if route.scheme == "https" else "ws",
        host=route.host,
        port=route.port,
        path=match.upstream_path,
        query_string=query.decode("latin-1"),
        encoded=True,
    )


async def proxy_websocket(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send, path: str) -> None:
    started = time.perf_counter()
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    head, peer, event = pipeline.arrival(scope, "WEBSOCKET", path)
    request_id = head.request_id
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        match = pipeline.routes.match(path, peer.host)
        event.route = match.route.name
        if head.error is not None:
            raise head.error
        browser = pipeline.browser_call(match, raw, peer, websocket=True)
        admitted = await pipeline.admit(
            match, path, "GET", head.authorization, head.org, head.api_key, event, browser=browser
        )
        forwarded = request_headers(
            head,
            raw,
            keep_authorization=match.route.public,
            has_body=False,
            identity=admitted.identity,
            peer=peer,
            request_id=request_id,
        )
        if pipeline.browsers is not None:
            forwarded = pipeline.browsers.strip_from(forwarded)
        headers = [(k, v) for k, v in forwarded if k not in HANDSHAKE]
        protocols = [
            p.strip()
            for k, v in raw
            if k == b"sec-websocket-protocol"
            for p in v.decode("latin-1").split(",")
            if p.strip()
        ]
        with upstream_errors():
            upstream = await asyncio.wait_for(
                pipeline.pools.get(match.route.name, pipeline.http).ws_connect(
                    _upstream_url(match, scope.get("query_string", b"")),
                    headers=headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=True,
                ),
                match.route.timeout.connect,
            )
    except Denied as denied:
        event.granted, event.reason, event.decision_id = False, denied.reason, denied.decision_id
        event.status = await _refuse(scope, send, denied, request_id)
        _finish(pipeline, event, started)
        return
    except GatewayError as error:
        if event.granted is None:
            event.granted, event.reason = False, error.audit_reason
        event.status = await _refuse(scope, send, error, request_id)
        _finish(pipeline, event, started)
        return

    await send(
        {
            "type": "websocket.accept",
            "subprotocol": upstream.protocol,
            "headers": [(b"x-request-id", request_id.encode())],
        }
    )
    event.status = 101
    tasks = [
        asyncio.create_task(_client_to_upstream(receive, upstream)),
        asyncio.create_task(_upstream_to_client(upstream, send)),
    ]
    if admitted.subject is not None and admitted.org is not None:
        key_id = admitted.key.key_id if admitted.key is not None else None
        client_ip = event.client_ip or ""
        checked = _recheck(pipeline, admitted.subject, admitted.org, path, key_id, admitted.session_id, client_ip)
        tasks.append(asyncio.create_task(checked))
    if admitted.expires_at is not None:
        tasks.append(asyncio.create_task(_expire(admitted.expires_at)))
    ended: str | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        ended = next(
            (task.result() for task in done if not task.cancelled() and not task.exception() and task.result()),
            None,
        )
        ended = ended if ended in (NO_LONGER_ALLOWED, EXPIRED) else None
    finally:
        # Stop both pumps before closing anything, so neither relays the other side's ordinary close.
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if ended is not None:
            event.reason = f"closed: {ended}"
            with contextlib.suppress(Exception):
                await send(_close(POLICY_VIOLATION, ended))
        if not upstream.closed:
            if ended is not None:
                await upstream.close(code=POLICY_VIOLATION, message=ended.encode())
            else:
                await upstream.close(code=1000)
        _finish(pipeline, event, started)


async def _client_to_upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> str:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close()
            return "client closed"
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await upstream.send_str(cast(str, message["text"]))
            elif message.get("bytes") is not None:
                await upstream.send_bytes(cast(bytes, message["bytes"]))


async def _upstream_to_client(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> str:
    async for message in upstream:
        if message.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": message.data, "bytes": None})
        elif message.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": message.data, "text": None})
        else:
            break
    with contextlib.suppress(Exception):
        await send(_close(upstream.close_code or 1000))
    return "upstream closed"


async def _recheck(
    pipeline: Pipeline,
    subject: str,
    org: str,
    path: str,
    key_id: str | None,
    session_id: str | None,
    client_ip: str,
) -> str:
    """Wait until the policy version moves and the connection is no longer allowed: its key revoked or no longer
    accepted from the client's address, its session ended, its org gone, or the decision changed."""
    state = pipeline.state
    version = state.version
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        if state.version == version:
            continue
        version = state.version
        if key_id is not None:
            record = state.api_key(key_id)
            if record is None or not record.accepts_from(client_ip):
                return NO_LONGER_ALLOWED
        if session_id is not None and state.session_revoked(session_id):
            return NO_LONGER_ALLOWED
        if state.org(org) is None or not state.decide(subject, org, path, "GET").allowed:
            return NO_LONGER_ALLOWED


async def _expire(at: float) -> str:
    """Return when the credential that opened the connection expires."""
    await asyncio.sleep(max(at - time.time(), 0.0))
    return EXPIRED


def _finish(pipeline: Pipeline, event: AuditEvent, started: float) -> None:
    event.duration_ms = milliseconds(started)
    pipeline.audit.emit(event)
    pipeline.metrics.observe(event)
