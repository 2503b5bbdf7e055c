"""Stage 5, forward: header hygiene, streaming both ways over the shared aiohttp pool, upstream errors -> 502/504."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import cast

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict
from yarl import URL

from gateway.asgitypes import Receive, Send
from gateway.errors import BadGateway, BadRequest, GatewayError, GatewayTimeout, PayloadTooLarge
from gateway.proxy.headers import HOP_BY_HOP, connection_tokens
from gateway.proxy.match import RouteMatch

CHUNK = 64 * 1024


class ForwardedRequest(aiohttp.ClientRequest):
    """aiohttp's request without the headers it adds on its own (`Accept`, `Accept-Encoding`, `User-Agent`, a
    default `Content-Type`): the upstream gets the client's, or none. An `Accept-Encoding` the client never sent
    would bring back a compressed body it cannot read. Passing `skip_auto_headers` per request does the same but
    rebuilds a multidict every time (measured: about 6% of a request's instructions); sessions made with
    `upstream_session` use this class instead."""

    _skip_auto_headers = CIMultiDict({hdrs.CONTENT_TYPE: None})

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        """Add nothing."""


def upstream_session(pool_size: int) -> aiohttp.ClientSession:
    """A keep-alive pool to upstreams that forwards bytes as they are."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool_size, ttl_dns_cache=60),
        auto_decompress=False,  # bytes pass through as the upstream sent them
        cookie_jar=aiohttp.DummyCookieJar(),  # never carry one caller's cookies into another's request
        request_class=ForwardedRequest,
    )


class ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


class BodyOverLimit(Exception):
    """A streamed body passed the route's limit; raised inside aiohttp's writer, answered as 413."""


_NOT_RETURNED = frozenset(name.encode() for name in HOP_BY_HOP | {"date", "x-request-id"})


def response_headers(
    raw: Iterable[tuple[bytes, bytes]], request_id: str, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones, `Date` (the server adds its own, once) and any
    X-Request-Id (the gateway's goes back to the client)."""
    out: list[tuple[bytes, bytes]] = []
    named: frozenset[bytes] = frozenset()
    for name, value in raw:
        lower = name.lower()
        if lower == b"connection":
            named = connection_tokens(raw)
        if lower in _NOT_RETURNED:
            continue
        if extra and lower.startswith(b"access-control-"):
            continue  # the route's CORS policy (in `extra`) replaces the upstream's
        out.append((lower, value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
    out.append((b"x-request-id", request_id.encode("ascii")))
    out.extend(extra)
    return out


def request_has_body(content_length: bytes | None, chunked: bool, limit: int) -> bool:
    """Whether a body follows; a declared Content-Length over `limit` is refused before anything is read."""
    if chunked:
        return True
    if content_length is None:
        return False
    try:
        length = int(content_length)
    except ValueError as exc:
        raise BadRequest("Content-Length: not a number") from exc
    if length > limit:
        raise _too_large(limit)
    return length > 0


async def body_stream(receive: Receive, limit: int, counter: list[int]) -> AsyncIterator[bytes]:
    """The client's body as it arrives; nothing is buffered beyond one ASGI message. Passing `limit` bytes
    stops the stream (the caller answers 413); `counter[0]` holds the bytes seen."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = cast(bytes, message.get("body", b""))
        counter[0] += len(chunk)
        if counter[0] > limit:
            raise BodyOverLimit()
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_BACKOFF = 0.05
# Failures before a single byte reached the upstream: safe to try again for idempotent methods.
CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# aiohttp's failures and what the client is told, first match wins (the way httpx maps transport errors).
UPSTREAM_ERRORS: tuple[tuple[type[BaseException], type[GatewayError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, GatewayTimeout, "the upstream did not accept the connection in time"),
    (aiohttp.ClientConnectorError, BadGateway, "the upstream refused the connection or could not be reached"),
    (TimeoutError, GatewayTimeout, "the upstream did not answer in time"),
    (aiohttp.ClientError, BadGateway, "the upstream refused the connection or could not be reached"),
)


def upstream_error(exc: BaseException, *, started: bool = False) -> Exception:
    """The error to raise for an aiohttp failure `exc`: after the response started only a cut connection is
    left (UpstreamBroke); before, the table's 502 or 504."""
    if started:
        return UpstreamBroke()
    for kind, error, detail in UPSTREAM_ERRORS:
        if isinstance(exc, kind):
            return error(detail)
    return BadGateway("the upstream failed")


@contextmanager
def upstream_errors(*, started: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Turn aiohttp's failures inside the block into the gateway's (see `upstream_error`)."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise upstream_error(exc, started=started()) from exc


WATCH_AFTER = 0.05
"""Seconds an exchange may take before the client's connection is watched for a disconnect. Most answers come
sooner, and a watch costs a task; a slow upstream or a long download is watched from then on."""


class _DisconnectWatch:
    """Cancels the request's task when the client goes away, watching only once the exchange is slow."""

    __slots__ = ("_handle", "_loop", "_receive", "_target", "_task", "gone")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, target: asyncio.Task[object]) -> None:
        self._loop = loop
        self._receive = receive
        self._target = target
        self._task: asyncio.Task[None] | None = None
        self.gone = False
        self._handle = loop.call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._target.cancel()

    def stop(self) -> None:
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


async def forward(
    session: aiohttp.ClientSession,
    match: RouteMatch,
    *,
    loop: asyncio.AbstractEventLoop,
    method: str,
    query: bytes,
    headers: list[tuple[str, str]],
    has_body: bool,
    receive: Receive,
    send: Send,
    request_id: str,
    extra_response_headers: list[tuple[bytes, bytes]],
) -> int:
    """Send the request upstream and stream the answer back; return the upstream status.

    Idempotent requests without a body are retried on connect failures (`retries` per route). While the
    upstream works, the client's connection is watched: if it goes away, the upstream request is cancelled.
    """
    route = match.route
    url = URL.build(
        scheme=route.scheme,
        host=route.host,
        port=route.port,
        path=match.upstream_path,
        query_string=query.decode("latin-1"),
        encoded=True,
    )
    attempts = 1 + (route.retries if method in IDEMPOTENT and not has_body else 0)
    # The loop is passed in: without it, asyncio looks it up, and on Python 3.11 every lookup is a getpid()
    # system call.
    current = asyncio.current_task(loop)
    # With a body, receive() belongs to the body stream, which notices a disconnect itself.
    watch = None if has_body or current is None else _DisconnectWatch(loop, receive, current)
    try:
        for attempt in range(attempts):
            try:
                return await _exchange(
                    session, match, url, method, headers, has_body, receive, send, request_id, extra_response_headers
                )
            except CONNECT_FAILURES as exc:
                if attempt + 1 == attempts:
                    raise upstream_error(exc) from exc
                await asyncio.sleep(RETRY_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover
    except asyncio.CancelledError:
        if watch is not None and watch.gone and current is not None:
            current.uncancel()
            raise ClientGone() from None
        raise
    finally:
        if watch is not None:
            watch.stop()


async def _exchange(
    session: aiohttp.ClientSession,
    match: RouteMatch,
    url: URL,
    method: str,
    headers: list[tuple[str, str]],
    has_body: bool,
    receive: Receive,
    send: Send,
    request_id: str,
    extra_response_headers: list[tuple[bytes, bytes]],
) -> int:
    """One attempt. Connect failures propagate as they are (the caller may retry); the rest become errors.
    An answer whose length is known and at most one chunk goes back in one body message; any other streams."""
    route = match.route
    counted = [0]
    data = body_stream(receive, route.max_body_bytes, counted) if has_body else None
    started = False
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=route.timeout,
        ) as upstream:
            start = {
                "type": "http.response.start",
                "status": upstream.status,
                "headers": response_headers(upstream.raw_headers, request_id, extra_response_headers),
            }
            length = upstream.content_length
            if length is not None and length <= CHUNK:
                body = await upstream.content.read() if length else b""
                await send(start)
                started = True
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return upstream.status
            await send(start)
            started = True
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return upstream.status
    except CONNECT_FAILURES:
        raise
    except BodyOverLimit as exc:
        raise _too_large(route.max_body_bytes) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        if counted[0] > route.max_body_bytes:  # aiohttp may wrap the writer's exception
            raise _too_large(route.max_body_bytes) from exc
        raise upstream_error(exc, started=started) from exc


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body may be at most {limit} bytes on this route")


class UpstreamBroke(Exception):
    """The upstream failed after the response started: nothing can be sent but a cut connection."""
