"""Reading the request headers the stages need, in one pass: credentials, org, request id, host, body framing.

Ambiguity is refused: a repeated credential or org header, and any header name with `_` (servers disagree on
whether `X_Gateway_User` is `X-Gateway-User`: OAuth2 Proxy CVE-2025-64484). Names arrive lower-cased (ASGI).
"""

from __future__ import annotations

import os
import re

from gateway.errors import BadRequest, GatewayError, HeadersTooLarge

_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
# What each header the stages read is called in the error that names it when it is sent twice.
_SINGLE = {b"authorization": "Authorization", b"x-api-key": "X-API-Key", b"x-org": "X-Org"}
_READ = frozenset({*_SINGLE, b"x-request-id", b"host", b"content-length", b"transfer-encoding"})


class RequestHead:
    """What the stages need from the request headers (values decoded as Latin-1)."""

    __slots__ = ("api_key", "authorization", "chunked", "content_length", "error", "host", "org", "request_id")

    def __init__(self) -> None:
        self.error: GatewayError | None = None
        """Headers over the size limit (431) or ambiguous (400): raised by the pipeline when it reads them."""
        self.authorization: str | None = None
        self.api_key: str | None = None
        self.org: str | None = None
        self.request_id = ""
        self.host: str | None = None
        self.content_length: bytes | None = None
        """The raw Content-Length value; checked against the route's limit by `forward.request_has_body`."""
        self.chunked = False


def read_head(raw: list[tuple[bytes, bytes]], *, allow_underscores: bool, max_bytes: int) -> RequestHead:
    """One pass over the headers. Over `max_bytes` in total is 431, an ambiguous header 400: both are kept in
    `error`, so the request id is known for the answer and the stages before them (route match, CORS
    preflights) keep their order."""
    head = RequestHead()
    total = 0
    problem: str | None = None
    for name, value in raw:
        total += len(name) + len(value)
        if name not in _READ:
            if problem is None and not allow_underscores and b"_" in name:
                problem = f"{name.decode('latin-1')}: header names containing '_' are refused"
            continue
        if name in _SINGLE:
            text = value.decode("latin-1")
            if name == b"authorization":
                if head.authorization is not None:
                    problem = problem or "Authorization: sent more than once"
                head.authorization = text
            elif name == b"x-api-key":
                if head.api_key is not None:
                    problem = problem or "X-API-Key: sent more than once"
                head.api_key = text.strip()
            else:
                if head.org is not None:
                    problem = problem or "X-Org: sent more than once"
                head.org = text
        elif name == b"x-request-id":
            if not head.request_id and _REQUEST_ID_RE.match(value):
                head.request_id = value.decode("ascii")
        elif name == b"host":
            head.host = value.decode("latin-1")
        elif name == b"content-length":
            head.content_length = value
        else:
            head.chunked = True
    if total > max_bytes:
        head.error = HeadersTooLarge(f"request headers may total at most {max_bytes} bytes")
    elif problem is not None:
        head.error = BadRequest(problem)
    if not head.request_id:
        head.request_id = new_request_id()
    return head


def new_request_id() -> str:
    """128 random bits in hex."""
    return os.urandom(16).hex()


def request_id_of(raw: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is a plain token (1-128 of A-Z a-z 0-9 . _ -), else a new one."""
    for name, value in raw:
        if name == b"x-request-id" and _REQUEST_ID_RE.match(value):
            return value.decode("ascii")
    return new_request_id()
