"""API keys: `gw_live_<key id>_<secret><checksum>`, GitHub's token format as the model.

- a recognisable prefix, so secret scanners find leaked keys (regex `gw_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}`);
- a public key id (12 base62 characters) to look the key up without touching the secret;
- 256 random bits of secret (43 base62 characters, ASVS 11.5.1 asks for at least 128);
- a CRC32 checksum (6 base62 characters) so typos and made-up keys are rejected before any lookup.

Only SHA-256 of the whole key is stored (a fast hash is right for 256 random bits) and compared in constant
time; the key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

from gateway.errors import InvalidToken

PREFIX = "gw_live_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_RE = re.compile(r"^gw_live_([0-9A-Za-z]{12})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})$")


def _base62(value: int, width: int) -> str:
    digits = []
    while value:
        value, rest = divmod(value, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), 6)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(the key to show once, its key id)."""
    key_id = _base62(secrets.randbits(71), 12)[-12:]
    secret = _base62(secrets.randbits(256), 43)[-43:]
    body = f"{PREFIX}{key_id}_{secret}"
    return body + _checksum(body), key_id


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX)


def parse(key: str) -> str:
    """The key id of a well-formed key with a valid checksum; InvalidToken otherwise (no lookup made)."""
    match = _KEY_RE.match(key)
    if match is None or not hmac.compare_digest(_checksum(key[:-6]), match.group(3)):
        raise InvalidToken("malformed API key")
    return match.group(1)


def listing(key_id: str, last4: str) -> str:
    """How a key is shown after creation: prefix, id and last four characters."""
    return f"{PREFIX}{key_id}_…{last4}"
