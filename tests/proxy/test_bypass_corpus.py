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
from gateway.policy.store import add_rules
from tests.conftest import Gateway

ADMIN = "/api/admin/"


def _corpus() -> list[bytes]:
    targets = [
        # dot segments, raw and encoded in every case and mix
        "/api/public/../admin/secret",
        "/api/./admin/secret",
        "/api/public/./../admin/secret",
        "/api/public/%2e%2e/admin/secret",
        "/api/public/%2E%2E/admin/secret",
        "/api/public/.%2e/admin/secret",
        "/api/public/%2e./admin/secret",
        "/api/%2e/admin/secret",
        "/api/public/..%2fadmin/secret",
        "/api/public/..%2Fadmin/secret",
        "/api/public/..%5cadmin/secret",
        "/api/public/..\\admin/secret",
        "/api/public/%252e%252e/admin/secret",
        "/api/public/%c0%ae%c0%ae/admin/secret",
        "/api/public/%uff0e%uff0e/admin/secret",
        "/api/public/..;/admin/secret",
        "/api/public/.../admin/secret",
        "/api/a/b/../../admin/secret",
        "/api/public/../../api/admin/secret",
        "/api/../api/admin/secret",
        "/../api/admin/secret",
        "/api/public/..",
        "/api/admin/secret/..",
        "/api/admin/../admin/secret",
        # slashes
        "//api/admin/secret",
        "/api//admin/secret",
        "/api/admin//secret",
        "///api///admin///secret",
        "/api%2fadmin/secret",
        "/api%2Fadmin%2Fsecret",
        "/api\\admin\\secret",
        "/api/%5cadmin/secret",
        "/api/admin%2fsecret",
        "/api%252fadmin/secret",
        "/api/%c0%afadmin/secret",
        "/api/%ef%bc%8fadmin/secret",
        "//evil.example/api/admin/secret",
        "/\\evil.example/api/admin/secret",
        # percent-encoded letters of the denied segment
        "/api/%61dmin/secret",
        "/api/%61%64%6d%69%6e/secret",
        "/api/adm%69n/secret",
        "/api/ad%6Din/secret",
        "/api/%41dmin/secret",
        "/api/admin/%73ecret",
        "/api/%2561dmin/secret",
        # case
        "/API/admin/secret",
        "/Api/admin/secret",
        "/api/ADMIN/secret",
        "/api/Admin/secret",
        "/api/aDmIn/secret",
        # fragments and query
        "/api/public#/../admin/secret",
        "/api/public%23/../admin/secret",
        "/api/admin/secret#x",
        "/api/public?/../admin/secret",
        "/api/public?x=/api/admin/secret",
        "/api/admin/secret?",
        "/api/admin?/secret",
        "/api/public%3f/../admin/secret",
        "/api/public%3F/../../api/admin/secret",
        # path parameters and separators
        "/api/admin;/secret",
        "/api/admin;jsessionid=1/secret",
        "/api;x=1/admin/secret",
        "/api/admin%3b/secret",
        "/api/admin%3B/secret",
        "/api/admin,/secret",
        "/api/admin%2c/secret",
        # NUL, controls and whitespace
        "/api/admin%00/secret",
        "/api/public%00/../admin/secret",
        "/api/admin/secret%00.json",
        "/api/admin%0d%0a/secret",
        "/api/admin%0a/secret",
        "/api/admin%09/secret",
        "/api/admin%20/secret",
        "/api/%20admin/secret",
        "/api/admin%7f/secret",
        "/api/admin/secret%20",
        "/api/admin/secret%09",
        # invalid or truncated escapes
        "/api/admin%/secret",
        "/api/admin%2/secret",
        "/api/admin%zz/secret",
        "/api/%admin/secret",
        "/api/admin%%32%66secret",
        "/api/admin%u002fsecret",
        # trailing forms
        "/api/admin/secret/",
        "/api/admin/secret/.",
        "/api/admin/secret/./",
        "/api/admin",
        "/api/admin/",
        "/api/admin/.",
        "/api/admin/secret..",
        "/api/admin/secret.",
        "/api/admin./secret",
        # unicode look-alikes (stay escaped, never decoded into ASCII)
        "/api/%e2%80%a4%e2%80%a4/admin/secret",
        "/api/%d0%b0dmin/secret",
        "/api/admin%e2%80%8b/secret",
        "/api/%ef%bd%81dmin/secret",
        # absolute and odd request-target forms
        "http://evil.example/api/admin/secret",
        "http://gw/api/public/../admin/secret",
        "*",
        "api/admin/secret",
        "/api/admin/secret HTTP/1.1\r\nX-A: b",
        # raw bytes
        "/api/admin\x00/secret",
        "/api/admin\t/secret",
        "/api/caf\xc3\xa9/../admin/secret",
        # long and deep
        "/api/" + "a/" * 300 + "../" * 300 + "admin/secret",
        "/api/" + "x" * 9000,
        "/api/public/" + "./" * 500 + "../admin/secret",
    ]
    return [target.encode("latin-1") if isinstance(target, str) else target for target in targets]


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


async def _viewer(gateway: Gateway) -> str:
    await gateway.org("acme")
    await gateway.user("viewer@acme.test", org="acme", role="viewer")
    async with gateway.runtime.services.sessions() as session:
        # Both lines: keyMatch2's `/api/admin/*` does not match `/api/admin` itself (`policy lint` warns).
        await add_rules(
            session,
            [
                Rule("p", ("viewer", "acme", "/api/admin", "*", "deny")),
                Rule("p", ("viewer", "acme", "/api/admin/*", "*", "deny")),
            ],
        )
        await session.commit()
    await gateway.runtime.refresh()
    return await gateway.login("viewer@acme.test")


def test_corpus_is_large() -> None:
    """At least 100 distinct attempts."""
    assert len(set(CORPUS)) >= 100


async def test_no_attempt_reaches_the_denied_area(gateway: Gateway) -> None:
    """Each attempt is refused, or reaches the upstream with exactly the path that was authorized."""
    token = await _viewer(gateway)
    assert await _raw(gateway.url, b"/api/public/ok", token) == 200  # controls: the viewer can read...
    assert await _raw(gateway.url, b"/api/admin/secret", token) == 403  # ...but not the admin area
    failures = []
    for target in CORPUS:
        before = len(gateway.upstream.seen)
        events_before = len(gateway.audit_events())
        status = await _raw(gateway.url, target, token)
        forwarded = gateway.upstream.seen[before:]
        if status >= 500:
            failures.append(f"{target[:60]!r}: {status}")
            continue
        if not forwarded:
            if status not in (0, 400, 403, 404, 405, 414, 431):
                failures.append(f"{target[:60]!r}: not forwarded but status {status}")
            continue
        arrived = forwarded[0].raw_path.split("?", 1)[0]
        events = gateway.audit_events()[events_before:]
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
async def test_known_vectors_get_the_documented_answer(gateway: Gateway, target: bytes, expected: int) -> None:
    """The advisory vectors get a specific, documented answer, not just any refusal."""
    token = await _viewer(gateway)
    assert await _raw(gateway.url, target, token) == expected
    assert gateway.upstream.seen == []


async def test_method_spellings_are_not_a_way_around_method_rules(gateway: Gateway) -> None:
    """Lower-case or unknown methods and override headers cannot turn a denied DELETE into an allowed one."""
    token = await _viewer(gateway)
    for method in (b"delete", b"DELETE", b"Delete", b"PURGE"):
        status = await _raw(gateway.url, b"/api/public/x", token, method=method)
        assert status in (400, 403, 405), method
    status = await _raw(gateway.url, b"/api/public/x", token, extra=b"X-HTTP-Method-Override: DELETE\r\n")
    assert status == 200
    assert gateway.upstream.last.method == "GET"
    assert gateway.upstream.last.header("X-HTTP-Method-Override") is None
