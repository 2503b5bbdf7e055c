"""New passwords: 8-128 characters of anything, exactly as typed; common ones and ones built from the email's
name or this product's name are refused (REQ-1, REQ-2, REQ-3)."""

from __future__ import annotations

import pytest

from gateway.identity.passwords import password_problem
from tests.conftest import Gateway


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("x" * 7 + "Q", None),
        ("abcdefg", "at least 8"),
        ("kq" * 64, None),
        ("kq" * 64 + "z", "at most 128"),
        ("  Ñandú 🦆 horse battery ", None),
        ("password1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("PASSWORD", "too common"),
        ("iloveyou!!", "too common"),
        ("my casbin gateway", "service's name"),
        ("ann-loves-tea", "email's name"),
        ("lowercaseonlybutlong", None),
    ],
)
def test_password_rules(password: str, problem: str | None) -> None:
    """Length, common list and context words; no composition rules."""
    found = password_problem(password, email="ann@example.test")
    assert (found is None) if problem is None else (found is not None and problem in found), found


async def test_passwords_are_checked_exactly_as_typed(gateway: Gateway) -> None:
    """A password with spaces, accents and emoji logs in only when typed exactly: not trimmed, case-folded or
    truncated."""
    exact = "  Ñandú 🦆 horse battery "
    await gateway.user("ann@example.test", password=exact)
    long = "k" * 79 + "z"
    await gateway.user("bob@example.test", password=long)

    async def status(email: str, password: str) -> int:
        return (await gateway.call("POST", "/auth/login", json={"email": email, "password": password}))[0]

    assert await status("ann@example.test", exact) == 200
    assert await status("ann@example.test", exact.strip()) == 401
    assert await status("ann@example.test", exact.upper()) == 401
    assert await status("bob@example.test", long) == 200
    assert await status("bob@example.test", long[:-1] + "y") == 401
