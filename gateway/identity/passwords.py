"""Argon2id password hashing with pwdlib, always in a worker thread so the event loop never hashes."""

from __future__ import annotations

import asyncio
import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from gateway.settings import Passwords

MIN_LENGTH = 8
MAX_LENGTH = 128


def password_problem(password: str) -> str | None:
    """Why `password` is unacceptable as a new password, or None. No composition rules (ASVS 6.2.5)."""
    if len(password) < MIN_LENGTH:
        return f"password: must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password: must be at most {MAX_LENGTH} characters"
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
