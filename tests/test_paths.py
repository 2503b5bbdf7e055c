"""The canonical path: one form for routing, Casbin and the upstream; ambiguous input is refused."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidPath
from gateway.paths import canonical_path

CANONICAL = [
    (b"/", "/"),
    (b"/api/orders/7", "/api/orders/7"),
    (b"/api//orders", "/api/orders"),
    (b"///api", "/api"),
    (b"/api/./orders", "/api/orders"),
    (b"/api/x/../orders", "/api/orders"),
    (b"/api/orders/", "/api/orders/"),
    (b"/api/orders/.", "/api/orders/"),
    (b"/a/..", "/"),
    (b"/api/%41%62c", "/api/Abc"),
    (b"/api/%7euser", "/api/~user"),
    (b"/api/a%2cb", "/api/a,b"),
    (b"/api/caf%c3%a9", "/api/caf%C3%A9"),
    (b"/api/caf\xc3\xa9", "/api/caf%C3%A9"),
    (b"/api/100%25", "/api/100%25"),
    (b"/api/a%3Fb", "/api/a%3Fb"),
    (b"/api/a%23b", "/api/a%23b"),
    (b"/api/a%3bb", "/api/a%3Bb"),
    (b"/api/a%20b", "/api/a%20b"),
    (b"/API/Orders", "/API/Orders"),
    (b"/api/..a/b.", "/api/..a/b."),
    (b"/api/v1.json", "/api/v1.json"),
]


@pytest.mark.parametrize(("raw", "expected"), CANONICAL, ids=[r.decode("latin-1") for r, _ in CANONICAL])
def test_canonical_form(raw: bytes, expected: str) -> None:
    """Escapes of literal-safe characters are decoded, others upper-cased, dots resolved, slashes collapsed."""
    assert canonical_path(raw) == expected
    assert canonical_path(expected.encode()) == expected, "the canonical form is a fixed point"


REFUSED = [
    b"api/x",
    b"/api/a%2fb",
    b"/api/a%2Fb",
    b"/api/a%5cb",
    b"/api/a\\b",
    b"/api/%2e%2e/admin",
    b"/api/%2e/x",
    b"/api/.%2e/x",
    b"/api/a%00b",
    b"/api/a%0ab",
    b"/api/a%7fb",
    b"/api/a\x00b",
    b"/api/a b",
    b"/api/a\tb",
    b"/api/a;jsessionid=1",
    b"/api/a%",
    b"/api/a%4",
    b"/api/a%zz",
    b"/..",
    b"/api/../../etc",
    b"/api/a?b",
    b"/api/a#b",
    b"/" + b"a" * 9000,
    b"/api/%c0%ae%c0%ae/admin",
    b"/api/%c0%afadmin",
    b"/api/%e0%80%ae",
    b"/api/%ed%a0%80",
    b"/api/caf%e9",
    b"/api/\xc0\xae",
]


@pytest.mark.parametrize("raw", REFUSED, ids=[r[:40].decode("latin-1") for r in REFUSED])
def test_ambiguous_paths_are_refused(raw: bytes) -> None:
    """Encoded slashes, control characters, path parameters, bad escapes and climbing dots are 400."""
    with pytest.raises(InvalidPath):
        canonical_path(raw)
