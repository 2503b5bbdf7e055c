"""The one error tree of the gateway and its problem+json rendering (RFC 9457).

    GatewayError                      500 internal-error
    ├── BadRequest                    400 bad-request          malformed input
    │   └── InvalidPath               400 invalid-path         request target cannot be made unambiguous
    ├── Unauthenticated               401 unauthenticated      no usable credentials (WWW-Authenticate: Bearer)
    │   └── InvalidToken              401 invalid-token        a credential was sent and rejected
    ├── Forbidden                     403 forbidden            authenticated but not allowed (also unknown org)
    │   ├── ReauthRequired            403 reauth-required      a sensitive change needs a sign-in within 15 min
    │   └── MfaEnrollmentRequired     403 mfa-enrollment-required  superadmins must turn on TOTP first
    ├── NotFound                      404 not-found            no route, or no such resource
    ├── Conflict                      409 conflict             the change clashes with existing state
    ├── RequestTimeout                408 request-timeout      the request's headers did not arrive in time
    ├── PreconditionFailed            412 precondition-failed  If-Match names a version that is no longer current
    ├── PayloadTooLarge               413 payload-too-large    the body exceeds the route's limit
    ├── HeadersTooLarge               431 headers-too-large    the request headers exceed the limit
    ├── Unprocessable                 422 validation-failed    well-formed input with invalid values (`field`)
    ├── TooManyRequests               429 too-many-requests    over a rate limit (Retry-After)
    ├── BadGateway                    502 bad-gateway          upstream refused, reset or unreachable
    ├── GatewayTimeout                504 gateway-timeout      upstream did not answer in time
    └── ServiceUnavailable            503 not-ready            the gateway cannot serve yet

A pipeline stage stops a request only by raising one of these; the data plane writes it with `send_problem`, the
Litestar handler with `problem_headers` and `render`, so a client sees one shape everywhere (body and headers).
`type` URIs are stable identifiers. The audit line's reason is `audit_reason` (the slug unless the raiser says
more): it may tell the operator what the client must not learn, such as why a valid API key was refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec

from gateway.asgitypes import Send

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "urn:gateway:problem:"


class GatewayError(Exception):
    """Base class; raise a subclass. `detail` is safe to show the client and must never contain secrets;
    `audit_reason` is written only in the audit line (never a secret either)."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        audit_reason: str | None = None,
        **extra: Any,
    ):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.audit_reason = audit_reason or self.slug
        self.extra = extra


class BadRequest(GatewayError):
    """Raise for malformed input the client must fix."""

    status = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidPath(BadRequest):
    """Raise when the request target has no single canonical form (encoded slash, dot segments, NUL...)."""

    slug = "invalid-path"
    title = "Invalid request path"


class Unauthenticated(GatewayError):
    """Raise when no credentials were presented; carries the RFC 6750 challenge."""

    status = 401
    slug = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail, headers={"www-authenticate": self.challenge()}, **extra)

    def challenge(self) -> str:
        return "Bearer"


class InvalidToken(Unauthenticated):
    """Raise when a credential was sent but is malformed, forged, expired or for someone else."""

    slug = "invalid-token"
    title = "Invalid credentials"

    def challenge(self) -> str:
        return 'Bearer error="invalid_token"'


class CredentialExpired(InvalidToken):
    """Raise when a genuine credential has expired (the answer is the same 401 as any invalid token). A browser's
    idle-expired session cookie is kept, not cleared, so the portal can resume a session still in use."""


class Forbidden(GatewayError):
    """Raise when the caller is known but not allowed; also for unknown organizations (no existence oracle)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class ReauthRequired(Forbidden):
    """Raise when a sensitive change (password, email, MFA, API keys) needs a recent sign-in."""

    slug = "reauth-required"
    title = "Recent authentication required"


class MfaEnrollmentRequired(Forbidden):
    """Raise when a superadmin without a second factor uses /admin and `login.superadmins_need_mfa` is on."""

    slug = "mfa-enrollment-required"
    title = "Two-step sign-in required"


class NotFound(GatewayError):
    """Raise when no route or resource matches."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(GatewayError):
    """Raise when a change clashes with existing state (duplicate slug, email...)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class RequestTimeout(GatewayError):
    """Raise (or write) when a client did not send its request line and headers in time (slow clients)."""

    status = 408
    slug = "request-timeout"
    title = "Request timeout"


class PreconditionFailed(GatewayError):
    """Raise when a write's If-Match names a version someone else has already replaced (no lost updates)."""

    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class PayloadTooLarge(GatewayError):
    """Raise when a request body exceeds the route's `max_body_bytes` (declared or counted while streaming)."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class HeadersTooLarge(GatewayError):
    """Raise when the request headers together exceed `max_header_bytes`."""

    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


class Unprocessable(GatewayError):
    """Raise for well-formed input whose values are invalid; name the field in `detail`."""

    status = 422
    slug = "validation-failed"
    title = "Validation failed"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        # Details read "<field>: <problem>"; the field is also a member of the problem document.
        if detail and "field" not in extra and ": " in detail:
            extra["field"] = detail.split(": ", 1)[0]
        super().__init__(detail, **extra)


class TooManyRequests(GatewayError):
    """Raise when a rate limit is exhausted; `retry_after` (seconds) becomes the Retry-After header."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: str) -> None:
        super().__init__(detail, headers={"retry-after": retry_after})


class BadGateway(GatewayError):
    """Raise when the upstream refused, reset or could not be reached."""

    status = 502
    slug = "bad-gateway"
    title = "Bad gateway"


class GatewayTimeout(GatewayError):
    """Raise when the upstream did not connect or answer in time."""

    status = 504
    slug = "gateway-timeout"
    title = "Gateway timeout"


class ServiceUnavailable(GatewayError):
    """Raise when the gateway is not ready (database unreachable, policy not loaded)."""

    status = 503
    slug = "not-ready"
    title = "Service unavailable"


_encoder = msgspec.json.Encoder()


def problem_body(*, status: int, slug: str, title: str, detail: str, extra: dict[str, Any] | None = None) -> bytes:
    """Serialise one problem document; `extra` members are added after the standard ones."""
    doc: dict[str, Any] = {"type": _TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    if extra:
        doc.update(extra)
    return _encoder.encode(doc)


def render(error: GatewayError) -> bytes:
    """Serialise a GatewayError as problem+json."""
    return problem_body(status=error.status, slug=error.slug, title=error.title, detail=error.detail, extra=error.extra)


PROBLEM_HEADERS = ((b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"cache-control", b"no-store"))


async def send_problem(
    send: Send, error: GatewayError, *, request_id: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> int:
    """Write `error` as a complete problem+json response on a raw ASGI `send` (the data plane's writer);
    return its status."""
    body = render(error)
    headers = [
        *PROBLEM_HEADERS,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items())
    headers.extend(extra)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return error.status
