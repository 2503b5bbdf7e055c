"""Forwarding headers are believed only from trusted proxies; the client is the right-most untrusted address."""

from __future__ import annotations

import pytest

from gateway.access.peer import TrustedProxies, resolve_peer

TRUSTED = TrustedProxies(("10.0.0.0/8", "127.0.0.1"))

CASES = [
    # peer, headers, expected client, scheme, host, X-Forwarded-For sent upstream
    ("198.51.100.7", [(b"x-forwarded-for", b"1.2.3.4")], "198.51.100.7", "http", "gw", "198.51.100.7"),
    ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")], "203.0.113.9", "http", "gw", "203.0.113.9, 127.0.0.1"),
    (
        "127.0.0.1",
        [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")],
        "203.0.113.9",
        "http",
        "gw",
        "6.6.6.6, 203.0.113.9, 127.0.0.1",
    ),
    (
        "127.0.0.1",
        [(b"x-forwarded-for", b"203.0.113.9, 10.1.2.3")],
        "203.0.113.9",
        "http",
        "gw",
        "203.0.113.9, 10.1.2.3, 127.0.0.1",
    ),
    (
        "127.0.0.1",
        [(b"x-forwarded-for", b"garbage, 203.0.113.9")],
        "203.0.113.9",
        "http",
        "gw",
        "203.0.113.9, 127.0.0.1",
    ),
    (
        "127.0.0.1",
        [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"api.example")],
        "127.0.0.1",
        "https",
        "api.example",
        "127.0.0.1",
    ),
    ("127.0.0.1", [(b"x-forwarded-proto", b"gopher")], "127.0.0.1", "http", "gw", "127.0.0.1"),
    (
        "198.51.100.7",
        [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"evil")],
        "198.51.100.7",
        "http",
        "gw",
        "198.51.100.7",
    ),
    (
        "127.0.0.1",
        [(b"forwarded", b'for="[2001:db8::1]:443";proto=https;host=api.example')],
        "2001:db8::1",
        "https",
        "api.example",
        "2001:db8::1, 127.0.0.1",
    ),
    (
        "127.0.0.1",
        [(b"forwarded", b"for=203.0.113.9, for=10.0.0.2")],
        "203.0.113.9",
        "http",
        "gw",
        "203.0.113.9, 10.0.0.2, 127.0.0.1",
    ),
]


@pytest.mark.parametrize(("peer", "headers", "client", "scheme", "host", "xff"), CASES)
def test_forwarding_headers_follow_the_trust_rule(
    peer: str, headers: list[tuple[bytes, bytes]], client: str, scheme: str, host: str, xff: str
) -> None:
    """Untrusted peers' forwarding headers are ignored; trusted chains are walked from the right."""
    resolved = resolve_peer(peer, "http", [(b"host", b"gw"), *headers], TRUSTED)
    assert (resolved.client_ip, resolved.scheme, resolved.host, resolved.forwarded_for) == (client, scheme, host, xff)


def test_nothing_is_trusted_by_default() -> None:
    """With no trusted proxies configured, even loopback's headers are ignored."""
    resolved = resolve_peer("127.0.0.1", "http", [(b"x-forwarded-for", b"1.2.3.4")], TrustedProxies(()))
    assert resolved.client_ip == "127.0.0.1"
    assert resolved.forwarded_for == "127.0.0.1"
