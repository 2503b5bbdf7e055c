"""The browser session cookie's token: its own `typ`, never interchangeable with an access token."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import InvalidToken
from gateway.identity.tokens import KeyRing, TokenService
from gateway.settings import Tokens


def _service() -> TokenService:
    key = Ed25519PrivateKey.generate()
    return TokenService(Tokens(), KeyRing(active_kid="k", private_keys={"k": key}, public_keys={"k": key.public_key()}))


def test_cookie_round_trip_and_expiry_capped_by_session_end() -> None:
    """A cookie verifies to its user and session; its expiry is the idle window, never past the session's end."""
    tokens = _service()
    end = time.time() + 120
    cookie, exp = tokens.issue_session_cookie("u1", session_id="s1", auth_time=7, idle_seconds=3600, not_after=end)
    assert exp == int(end)
    principal, issued, not_after = tokens.verify_session_cookie(cookie)
    assert (principal.user_id, principal.session_id, principal.auth_time) == ("u1", "s1", 7)
    assert not_after == int(end) and issued <= time.time()


def test_cookie_and_access_token_are_not_interchangeable() -> None:
    """A cookie is refused as a bearer token and an access token as a cookie, even from the cache."""
    tokens = _service()
    cookie, _ = tokens.issue_session_cookie(
        "u1", session_id="s1", auth_time=1, idle_seconds=60, not_after=time.time() + 600
    )
    access, _ = tokens.issue_access_token("u1", session_id="s1")
    tokens.verify_session_cookie(cookie)
    tokens.verify(access)
    with pytest.raises(InvalidToken):
        tokens.verify(cookie)
    with pytest.raises(InvalidToken):
        tokens.verify_session_cookie(access)


def test_cookie_from_another_key_is_refused() -> None:
    """A cookie signed by a key outside the ring is refused."""
    cookie, _ = _service().issue_session_cookie(
        "u1", session_id="s1", auth_time=1, idle_seconds=60, not_after=time.time() + 600
    )
    with pytest.raises(InvalidToken):
        _service().verify_session_cookie(cookie)


def test_a_genuine_but_idle_cookie_is_recognised_only_as_genuine() -> None:
    """A cookie past its idle expiry fails the normal check but is still recognised as one this gateway signed
    (for the portal's re-issue); a tampered cookie, another key's cookie or an access token never are."""
    tokens = _service()
    idle, _ = tokens.issue_session_cookie(
        "u1", session_id="s1", auth_time=1, idle_seconds=-60, not_after=time.time() + 600
    )
    with pytest.raises(InvalidToken):
        tokens.verify_session_cookie(idle)
    principal, _, _ = tokens.genuine_session_cookie(idle)
    assert (principal.user_id, principal.session_id) == ("u1", "s1")
    head, body, signature = idle.split(".")
    tampered = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    foreign, _ = _service().issue_session_cookie(
        "u1", session_id="s1", auth_time=1, idle_seconds=60, not_after=time.time() + 600
    )
    access, _ = tokens.issue_access_token("u1", session_id="s1")
    for bad in (tampered, foreign, access, "not-a-jwt"):
        with pytest.raises(InvalidToken):
            tokens.genuine_session_cookie(bad)
