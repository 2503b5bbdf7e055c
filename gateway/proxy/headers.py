"""Reading the request headers the stages need: credentials, org, request id; ambiguity is refused."""

from __future__ import annotations

import os
import re

from gateway.errors import BadRequest, HeadersTooLarge
from gateway.proxy.resolve import ORG_HEADER

_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


def pick_headers(
    raw: list[tuple[bytes, bytes]], allow_underscores: bool, max_bytes: int
) -> tuple[str | None, str | None, str | None]:
    """Authorization, X-Org and X-API-Key; a repeated one is ambiguous and refused, and so is any header name with
    `_`: servers disagree on whether `X_Gateway_User` is `X-Gateway-User` (OAuth2 Proxy CVE-2025-64484)."""
    authorization = org = api_key = None
    if sum(len(name) + len(value) for name, value in raw) > max_bytes:
        raise HeadersTooLarge(f"request headers may total at most {max_bytes} bytes")
    for name, value in raw:
        if b"_" in name and not allow_underscores:
            raise BadRequest(f"{name.decode('latin-1')}: header names containing '_' are refused")
        if name == b"authorization":
            if authorization is not None:
                raise BadRequest("Authorization: sent more than once")
            authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            if api_key is not None:
                raise BadRequest("X-API-Key: sent more than once")
            api_key = value.decode("latin-1").strip()
        elif name == ORG_HEADER.encode():
            if org is not None:
                raise BadRequest("X-Org: sent more than once")
            org = value.decode("latin-1")
    return authorization, org, api_key


def request_id_of(raw: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is a plain token (1-128 of A-Z a-z 0-9 . _ -), else 128 new random bits
    in hex."""
    for name, value in raw:
        if name == b"x-request-id" and _REQUEST_ID_RE.match(value):
            return value.decode("ascii")
    return os.urandom(16).hex()
