"""Secrets at rest: sealed with Fernet (AES-128-CBC and HMAC-SHA256) under the operator's `encryption_key`.

Without a key, values are stored as they are (the README says what that means). A sealed value carries the
`fernet:` prefix, so rows written before a key was configured stay readable, and a sealed value read without
the key fails loudly instead of being used as if it were plain.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

SEALED = "fernet:"


class SealingError(RuntimeError):
    """A sealed value cannot be opened: no key configured, or a different key."""


def new_key() -> str:
    return Fernet.generate_key().decode()


class Sealer:
    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(SEALED):
            return stored
        if self._fernet is None:
            raise SealingError("a sealed secret needs encryption_key in the configuration")
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED).encode()).decode()
        except InvalidToken as exc:
            raise SealingError("a sealed secret does not open with the configured encryption_key") from exc
