"""The bypass corpus: request targets from the peers' advisories and beyond, sent byte for byte.

The caller is a viewer of `acme`, allowed GET everywhere except `/api/admin` and `/api/admin/*` (deny lines).
Every attempt must be either refused (4xx, nothing forwarded) or arrive at the upstream with exactly the path
the gateway authorized (the audit line's path) - and never inside `/api/admin/`. Sources: Envoy CVE-2019-9901 (`..`),
CVE-2021-29492 (`%2F`), CVE-2021-32779 (`#`); Oathkeeper GHSA-p224-6x5r-fjpm (raw `..`); Pomerium
GHSA-pvrc-wvj2-f59p (policy path != routed path); APISIX CVE-2021-43557 (raw URI); OAuth2 Proxy
GHSA-7rh7-c77v-6434 (query in route match), GHSA-pxq7-h93f-9jrg (fragment); OPA-Envoy GHSA-9f29-v6mm-pw6w
(leading `//`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from gateway.policy.rules import Rule
from tests.conftest import BareGateway

ADMIN = "/api/admin/"


def _corpus() -> list[tuple[bytes, int]]:
    """Each target with the one answer it gets: 400 (not canonical), 403 (denied), 404 (no route), or 200 (forwarded
    to a path outside the denied area: a different segment than `admin`, or the query string)."""
    targets: list[tuple[str, int]] = [
        # dot segments, raw and encoded in every case and mix
        ("/api/public/../admin/secret", 403),
        ("/api/./admin/secret", 403),
        ("/api/public/./../admin/secret", 403),
        ("/api/public/%2e%2e/admin/secret", 400),
        ("/api/public/%2E%2E/admin/secret", 400),
        ("/api/public/.%2e/admin/secret", 400),
        ("/api/public/%2e./admin/secret", 400),
        ("/api/%2e/admin/secret", 400),
        ("/api/public/..%2fadmin/secret", 400),
        ("/api/public/..%2Fadmin/secret", 400),
        ("/api/public/..%5cadmin/secret", 400),
        ("/api/public/..\\admin/secret", 400),
        ("/api/public/%252e%252e/admin/secret", 400),
        ("/api/public/%c0%ae%c0%ae/admin/secret", 400),
        ("/api/public/%uff0e%uff0e/admin/secret", 400),
        ("/api/public/..;/admin/secret", 400),
        ("/api/public/.../admin/secret", 200),
        ("/api/a/b/../../admin/secret", 403),
        ("/api/public/../../api/admin/secret", 403),
        ("/api/../api/admin/secret", 403),
        ("/../api/admin/secret", 400),
        ("/api/public/..", 200),
        ("/api/admin/secret/..", 403),
        ("/api/admin/../admin/secret", 403),
        # slashes
        ("//api/admin/secret", 403),
        ("/api//admin/secret", 403),
        ("/api/admin//secret", 403),
        ("///api///admin///secret", 403),
        ("/api%2fadmin/secret", 400),
        ("/api%2Fadmin%2Fsecret", 400),
        ("/api\\admin\\secret", 400),
        ("/api/%5cadmin/secret", 400),
        ("/api/admin%2fsecret", 400),
        ("/api%252fadmin/secret", 404),  # one segment `api%252fadmin`: no route has it (strictness is per route)
        ("/api/%c0%afadmin/secret", 400),
        ("/api/%ef%bc%8fadmin/secret", 400),
        ("//evil.example/api/admin/secret", 404),  # slashes collapse: /evil.example/..., no route
        ("/\\evil.example/api/admin/secret", 400),
        # percent-encoded letters of the denied segment
        ("/api/%61dmin/secret", 403),
        ("/api/%61%64%6d%69%6e/secret", 403),
        ("/api/adm%69n/secret", 403),
        ("/api/ad%6Din/secret", 403),
        ("/api/%41dmin/secret", 200),  # decoded to `Admin`: case is significant, not the denied segment
        ("/api/admin/%73ecret", 403),
        ("/api/%2561dmin/secret", 200),  # a literal `%61dmin` segment (only `.`, `/`, `\` are refused twice-encoded)
        # case
        ("/API/admin/secret", 404),
        ("/Api/admin/secret", 404),
        ("/api/ADMIN/secret", 200),
        ("/api/Admin/secret", 200),
        ("/api/aDmIn/secret", 200),
        # fragments and query
        ("/api/public#/../admin/secret", 400),
        ("/api/public%23/../admin/secret", 403),
        ("/api/admin/secret#x", 400),
        ("/api/public?/../admin/secret", 200),
        ("/api/public?x=/api/admin/secret", 200),
        ("/api/admin/secret?", 403),
        ("/api/admin?/secret", 403),
        ("/api/public%3f/../admin/secret", 403),
        ("/api/public%3F/../../api/admin/secret", 403),
        # path parameters and separators
        ("/api/admin;/secret", 400),
        ("/api/admin;jsessionid=1/secret", 400),
        ("/api;x=1/admin/secret", 400),
        ("/api/admin%3b/secret", 200),
        ("/api/admin%3B/secret", 200),
        ("/api/admin,/secret", 200),
        ("/api/admin%2c/secret", 200),
        # NUL, controls and whitespace
        ("/api/admin%00/secret", 400),
        ("/api/public%00/../admin/secret", 400),
        ("/api/admin/secret%00.json", 400),
        ("/api/admin%0d%0a/secret", 400),
        ("/api/admin%0a/secret", 400),
        ("/api/admin%09/secret", 400),
        ("/api/admin%20/secret", 200),
        ("/api/%20admin/secret", 200),
        ("/api/admin%7f/secret", 400),
        ("/api/admin/secret%20", 403),
        ("/api/admin/secret%09", 400),
        # invalid or truncated escapes
        ("/api/admin%/secret", 400),
        ("/api/admin%2/secret", 400),
        ("/api/admin%zz/secret", 400),
        ("/api/%admin/secret", 400),
        ("/api/admin%%32%66secret", 400),
        ("/api/admin%u002fsecret", 400),
        # trailing forms
        ("/api/admin/secret/", 403),
        ("/api/admin/secret/.", 403),
        ("/api/admin/secret/./", 403),
        ("/api/admin", 403),
        ("/api/admin/", 403),
        ("/api/admin/.", 403),
        ("/api/admin/secret..", 403),
        ("/api/admin/secret.", 403),
        ("/api/admin./secret", 200),
        # unicode look-alikes (stay escaped, never decoded into ASCII)
        ("/api/%e2%80%a4%e2%80%a4/admin/secret", 400),
        ("/api/%d0%b0dmin/secret", 200),
        ("/api/admin%e2%80%8b/secret", 200),
        ("/api/%ef%bd%81dmin/secret", 400),  # full-width a: /api/admin/secret to an NFKC upstream
        # absolute and odd request-target forms
        ("http://evil.example/api/admin/secret", 403),
        ("http://gw/api/public/../admin/secret", 403),
        ("*", 400),
        ("api/admin/secret", 400),
        ("/api/admin/secret HTTP/1.1\r\nX-A: b", 403),
        # raw bytes
        ("/api/admin\x00/secret", 400),
        ("/api/admin\t/secret", 400),
        ("/api/caf\xc3\xa9/../admin/secret", 400),
        # long and deep
        ("/api/" + "a/" * 300 + "../" * 300 + "admin/secret", 403),
        ("/api/" + "x" * 9000, 400),
        ("/api/public/" + "./" * 500 + "../admin/secret", 403),
    ]
    return [(target.encode("latin-1"), status) for target, status in targets]


CORPUS = _corpus()


async def _raw(url: str, target: bytes, token: str, *, method: bytes = b"GET", extra: bytes = b"") -> int:
    """Send one request exactly as given; return the status, or 0 when the server closed without one."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            method
            + b" "
            + target
            + b" HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nX-Org: acme\r\n"
            + extra
            + b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        await reader.read()
    finally:
        writer.close()
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0


def _viewer(gateway: BareGateway) -> str:
    """A viewer of acme, denied the admin area: its access token."""
    # Both lines: keyMatch2's `/api/admin/*` does not match `/api/admin` itself (`policy lint` warns).
    gateway.install(
        Rule("p", ("viewer", "acme", "/api/admin", "*", "deny")),
        Rule("p", ("viewer", "acme", "/api/admin/*", "*", "deny")),
    )
    return gateway.tokens["viewer"]


def test_corpus_is_large() -> None:
    """At least 100 distinct attempts."""
    assert len({target for target, _ in CORPUS}) == len(CORPUS) >= 100


async def test_no_attempt_reaches_the_denied_area(bare: BareGateway) -> None:
    """Each attempt gets its one answer: refused with nothing forwarded, or forwarded with exactly the path that
    was authorized, never inside the denied area."""
    token = _viewer(bare)
    assert await _raw(bare.url, b"/api/public/ok", token) == 200  # controls: the viewer can read...
    assert await _raw(bare.url, b"/api/admin/secret", token) == 403  # ...but not the admin area
    failures = []
    for target, expected in CORPUS:
        before = len(bare.upstream.seen)
        events_before = len(bare.audit_events())
        status = await _raw(bare.url, target, token)
        forwarded = bare.upstream.seen[before:]
        if status != expected:
            failures.append(f"{target[:60]!r}: {status}, expected {expected}")
            continue
        if not forwarded:
            if expected == 200:
                failures.append(f"{target[:60]!r}: 200 but nothing reached the upstream")
            continue
        if expected != 200:
            failures.append(f"{target[:60]!r}: refused with {status} but forwarded")
            continue
        arrived = forwarded[0].raw_path.split("?", 1)[0]
        events = bare.audit_events()[events_before:]
        authorized = [event["path"] for event in events if event["granted"]]
        if arrived.startswith(ADMIN) or arrived == ADMIN.rstrip("/"):
            failures.append(f"{target[:60]!r}: reached {arrived!r}")
        elif authorized != [arrived]:
            failures.append(f"{target[:60]!r}: authorized {authorized!r} but upstream got {arrived!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/api/%61dmin/secret", 403),  # decoded once, then denied
        (b"/api/public/../admin/secret", 403),  # resolved once, then denied
        (b"/api/public/%2e%2e/admin/secret", 400),  # encoded dot segment
        (b"/api%2fadmin/secret", 400),  # encoded slash
        (b"/api/admin;/secret", 400),  # path parameter
        (b"//api/admin/secret", 403),  # leading // is a path, not an authority
        (b"/api/public%23/../admin/secret", 403),  # %23 is data, `..` still resolves
        (b"/api/public#/../admin/secret", 400),  # a raw fragment is refused, not silently dropped
        (b"/api/public/%c0%ae%c0%ae/admin/secret", 400),  # overlong UTF-8 for `..`
    ],
)
async def test_known_vectors_get_the_documented_answer(bare: BareGateway, target: bytes, expected: int) -> None:
    """The advisory vectors get a specific, documented answer, not just any refusal."""
    token = _viewer(bare)
    assert await _raw(bare.url, target, token) == expected
    assert bare.upstream.seen == []


async def test_method_spellings_are_not_a_way_around_method_rules(bare: BareGateway) -> None:
    """Lower-case or unknown methods and override headers cannot turn a denied DELETE into an allowed one."""
    token = _viewer(bare)
    # Methods are case-sensitive tokens: the HTTP parser refuses what is not upper case (400); an upper-case
    # method no line grants is denied by the enforcer (403).
    for method, expected in ((b"delete", 400), (b"DELETE", 403), (b"Delete", 400), (b"PURGE", 403)):
        status = await _raw(bare.url, b"/api/public/x", token, method=method)
        assert status == expected, method
    assert bare.upstream.seen == []
    status = await _raw(bare.url, b"/api/public/x", token, extra=b"X-HTTP-Method-Override: DELETE\r\n")
    assert status == 200
    assert bare.upstream.last.method == "GET"
    assert bare.upstream.last.header("X-HTTP-Method-Override") is None
