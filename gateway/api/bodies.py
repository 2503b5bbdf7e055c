"""Every JSON body the control plane accepts is checked before any handler sees it: bounded in size and nesting,
and free of control characters in its strings.

Without it, 1,000 nested arrays exhaust a decoder's recursion (a 500 on every endpoint with a body, the
unauthenticated ones included), and a NUL inside a name reaches PostgreSQL, which refuses it as a data error.
Refusals are problem+json: 413 over the size, 400 over the nesting, 422 naming the field for a control character.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway.access.request_ids import request_id_of
from gateway.asgitypes import ASGIApp, Message, Receive, Scope, Send
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, Unprocessable, send_problem

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 16
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count)."""
    deepest = level = 0
    for bracket in _BRACKETS.finditer(_STRINGS.sub(b'""', body)):
        if bracket.group() in (b"[", b"{"):
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def control_character_at(value: Any, where: str = "") -> str | None:
    """The path (`name`, `permissions[1].path`) of the first string, or object key, holding a control
    character; None if there is none."""
    if isinstance(value, str):
        return where or "(body)" if _CONTROL.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _CONTROL.search(key):
                return path
            found = control_character_at(item, path)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = control_character_at(item, f"{where}[{index}]")
            if found:
                return found
    return None


def check(body: bytes) -> None:
    """Raise the GatewayError a JSON body deserves, or nothing."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    if depth(body) > MAX_DEPTH:
        raise BadRequest(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return  # not JSON: the handler's own decoding answers it (400)
    field = control_character_at(decoded)
    if field:
        raise Unprocessable(f"{field}: control characters are not accepted", field=field)


class BodyGuard:
    """ASGI middleware around the control plane: reads a request's body (up to the limit), checks it, then hands
    the application the same bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        disconnected = False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await self._refuse(scope, send, PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes"))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not disconnected and body:
            try:
                check(body)
            except GatewayError as error:
                await self._refuse(scope, send, error)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed and not disconnected:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, error: GatewayError) -> None:
        await send_problem(send, error, request_id=request_id_of(scope["headers"]))
