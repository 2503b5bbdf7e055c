"""Argon2id password hashing with pwdlib, always in a worker thread so the event loop never hashes."""

from __future__ import annotations

import asyncio
import functools
import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from gateway.settings import Passwords

MIN_LENGTH = 8
MAX_LENGTH = 128


CONTEXT_WORDS = ("casbin", "gateway")
"""Words of this product that make a password guessable here (ASVS 6.2.11)."""
_TRAILER = "0123456789!@#$%^&*()-_=+.,?~ "


@functools.cache
def _common() -> frozenset[str]:
    """zxcvbn's 30,000 most common passwords (shipped with the package; no network), lower-cased."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why `password` is unacceptable as a new password, or None. Any Unicode, checked exactly as typed; no
    composition rules (ASVS 6.2.5); refused when common, or built from the email's name or this product's."""
    if len(password) < MIN_LENGTH:
        return f"password: must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password: must be at most {MAX_LENGTH} characters"
    lowered = password.lower()
    core = lowered.rstrip(_TRAILER)
    common = _common()
    if lowered in common or (len(core) >= 4 and len(lowered) - len(core) <= 4 and core in common):
        return "password: too common; choose a longer passphrase"
    local = email.split("@", 1)[0].lower() if email else ""
    for word in (*CONTEXT_WORDS, local):
        if len(word) >= 3 and word in lowered:
            return "password: must not contain your email's name or this service's name"
    return None


class PasswordHasher:
    """Hashes and verifies passwords; verification of an unknown user still costs one full Argon2 run."""

    def __init__(self, settings: Passwords) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.time_cost,
                    memory_cost=settings.memory_kib,
                    parallelism=settings.parallelism,
                ),
            )
        )
        # A hash of a random secret: verifying against it makes an unknown email as slow as a wrong password.
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Return (valid, new_hash); `new_hash` is set when the stored hash uses outdated parameters."""
        if stored is None:
            await asyncio.to_thread(self._hash.verify, password, self._dummy)
            return False, None
        return await asyncio.to_thread(self._hash.verify_and_update, password, stored)
