"""Password hashing: Argon2id at OWASP's minimum by default, rehash when parameters rise."""

from __future__ import annotations

from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.settings import Passwords


async def test_default_hash_is_argon2id_at_owasp_minimum() -> None:
    """The default parameters are m=19456 KiB, t=2, p=1, and the hash verifies exactly as typed."""
    hasher = PasswordHasher(Passwords())
    stored = await hasher.hash("  Ñandú 🦆 horse battery ")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await hasher.verify("  Ñandú 🦆 horse battery ", stored))[0]
    assert not (await hasher.verify("Ñandú 🦆 horse battery", stored))[0]
    assert not (await hasher.verify("unknown user", None))[0]


async def test_outdated_hash_is_upgraded_on_verify() -> None:
    """A hash made with weaker parameters verifies and comes back re-hashed with the current ones."""
    weak = await PasswordHasher(Passwords(memory_kib=1024, time_cost=1)).hash("a long password")
    valid, upgraded = await PasswordHasher(Passwords()).verify("a long password", weak)
    assert valid
    assert upgraded is not None
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_length_rules() -> None:
    """8 to 128 characters, no composition rules."""
    assert password_problem("short") is not None
    assert password_problem("x" * 129) is not None
    assert password_problem("aaaaaaaa") is None
