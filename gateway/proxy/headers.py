"""Request headers in one pass: what the stages need (credentials, org, request id, host, body framing) and
which of the client's headers may go upstream.

Ambiguity is refused: a repeated credential or org header, and any header name with `_` (servers disagree on
whether `X_Gateway_User` is `X-Gateway-User`: OAuth2 Proxy CVE-2025-64484). Never forwarded: hop-by-hop
headers and those a `Connection` header names, what the gateway writes itself, headers that would make an
upstream act on another path or method, any spelling of `x-gateway-*`, and the credential (except on public
routes). Names arrive lower-cased (ASGI) and are compared as bytes; only forwarded ones are decoded.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.access.peer import Peer
from gateway.access.request_ids import new_request_id, well_formed
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Written by the gateway itself; what the client sent under these names is dropped.
GATEWAY_WRITTEN = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"}
)
# Headers some frameworks and proxies obey to change the path or method they act on. The gateway authorized
# one path and one method; a client must not be able to name another one behind its back.
REWRITES = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-forwarded-prefix",
        "x-forwarded-method",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-real-ip",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
_NEVER_FORWARDED = frozenset(name.encode() for name in HOP_BY_HOP | GATEWAY_WRITTEN | REWRITES)
IDENTITY_NAMES = (b"x-gateway-", b"x-gateway_", b"x_gateway-", b"x_gateway_")
"""X-Gateway-*, x_gateway_*, X-Gateway_User...: only the gateway writes these, under any separator."""

# What each header the stages read is called in the error that names it when it is sent twice.
_SINGLE = {b"authorization": "Authorization", b"x-api-key": "X-API-Key", b"x-org": "X-Org"}
_READ = frozenset({*_SINGLE, b"x-request-id", b"host", b"content-length", b"transfer-encoding"})


class RequestHead:
    """What the stages need from the request headers (values decoded as Latin-1)."""

    __slots__ = (
        "api_key",
        "authorization",
        "chunked",
        "content_length",
        "credentials",
        "error",
        "forwardable",
        "host",
        "named",
        "org",
        "request_id",
    )

    def __init__(self) -> None:
        self.forwardable: list[tuple[str, str]] = []
        """The client's headers that may go upstream on any route (decoded)."""
        self.credentials: list[tuple[str, str]] = []
        """Authorization and X-API-Key as sent: forwarded on public routes only."""
        self.named = False
        """A Connection header was sent: the headers it names are dropped too (see `request_headers`)."""
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
    forwardable = head.forwardable
    for name, value in raw:
        total += len(name) + len(value)
        if name not in _READ:
            if problem is None and not allow_underscores and b"_" in name:
                problem = f"{name.decode('latin-1')}: header names containing '_' are refused"
            if name in _NEVER_FORWARDED:
                head.named = head.named or name == b"connection"
            elif not name.startswith(IDENTITY_NAMES):
                forwardable.append((name.decode("latin-1"), value.decode("latin-1")))
            continue
        if name in _SINGLE:
            text = value.decode("latin-1")
            if name == b"x-org":
                forwardable.append(("x-org", text))
            else:
                head.credentials.append((name.decode("latin-1"), text))
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
            if not head.request_id and well_formed(value):
                head.request_id = value.decode("ascii")
        elif name == b"host":
            head.host = value.decode("latin-1")
        elif name == b"content-length":
            head.content_length = value
        else:
            head.chunked = True  # transfer-encoding: hop-by-hop, never forwarded
    if total > max_bytes:
        head.error = HeadersTooLarge(f"request headers may total at most {max_bytes} bytes")
    elif problem is not None:
        head.error = BadRequest(problem)
    if not head.request_id:
        head.request_id = new_request_id()
    return head


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names a `Connection` header lists (hop-by-hop for this one message), lower-cased."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def request_headers(
    head: RequestHead,
    raw: list[tuple[bytes, bytes]],
    *,
    keep_authorization: bool,
    has_body: bool,
    identity: tuple[tuple[str, str], ...],
    peer: Peer,
    request_id: str,
) -> list[tuple[str, str]]:
    """What goes upstream: the client's forwardable headers (its credential only on public routes, its
    Content-Length only with a body: aiohttp writes its own otherwise), then ours: the verified identity,
    X-Forwarded-For/-Proto/-Host and X-Request-Id. A client's X-Org is forwarded as the org decided on (the
    identity's X-Gateway-Org), never as sent: the upstream cannot read another org than the one authorized."""
    headers = list(head.forwardable)
    if head.org is not None and identity:
        decided = next((value for name, value in identity if name == "x-gateway-org"), "")
        headers = [(name, decided) if name == "x-org" else (name, value) for name, value in headers]
    if keep_authorization:
        headers.extend(head.credentials)
    if has_body and head.content_length is not None:
        headers.append(("content-length", head.content_length.decode("latin-1")))
    if head.named:
        named = {name.decode("latin-1") for name in connection_tokens(raw)}
        headers = [(name, value) for name, value in headers if name not in named]
    headers.extend(identity)
    headers.append(("x-forwarded-for", peer.forwarded_for))
    headers.append(("x-forwarded-proto", peer.scheme))
    if peer.host is not None:
        headers.append(("x-forwarded-host", peer.host))
    headers.append(("x-request-id", request_id))
    return headers
