"""One canonical form for a request path: what routes match, Casbin evaluates, and the upstream receives.

Rules (documented in the README):
- decode percent-escapes of characters that may stand literally in a path (unreserved, sub-delims except `;`,
  `:` and `@`); encode everything else as upper-case `%XX` (so non-ASCII and `%`, `?`, `#` stay escaped);
- refuse what has no single meaning: encoded `/` or `\\`, raw `\\`, `;` path parameters, NUL and control
  characters (raw or encoded), invalid escapes, encoded dot segments, dot segments that climb above `/`,
  bytes that are not UTF-8 (overlong forms such as `%C0%AE` included), and (serve.py) a `#` fragment;
- resolve literal `.` and `..` segments (RFC 3986 §5.2.4) and collapse repeated slashes;
- keep case and a trailing slash: both are significant.

`second_reading` then names what an upstream could still read differently if it decoded once more or
normalised Unicode (NFKC): a double-encoded `.`, `/` or `\\` (`%252e`), or a non-ASCII character whose
compatibility form brings in ASCII: a separator (full-width U+FF0E, two-dot leader U+2025) or a letter or digit
(full-width a U+FF41, ligature fi U+FB01, superscript two U+00B2), which would turn the path the policy
decided on into another (`/api/%EF%BD%81dmin` into `/api/admin`). Refused by default; a route may opt
out (`strict_paths = false`).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote, unquote_to_bytes

from gateway.errors import InvalidPath

MAX_PATH_BYTES = 8192
# Characters that stand for themselves in the canonical form.
_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")
_ESCAPE = [f"%{byte:02X}" for byte in range(256)]
# The common case: nothing to decode, encode, resolve or collapse (only literal characters and '/', no empty
# segment, no segment starting with '.'): three C-level checks instead of a regular expression.
_FAST_BYTES = bytes(_LITERAL) + b"/"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_HIGH_ESCAPE = re.compile(r"%[89A-F][0-9A-F]")
# `%25` (an encoded '%') before the encoding of '.', '/' or '\', at any depth of re-encoding.
_DOUBLE_ENCODED = re.compile(r"%25(?:25)*(?:2[EF]|5C)", re.IGNORECASE)
_SEPARATORS = frozenset("./\\")


def _segment(raw: bytes) -> str:
    """Canonicalise one segment (no `/` inside)."""
    out: list[str] = []
    encoded_dot = False
    index, length = 0, len(raw)
    while index < length:
        byte = raw[index]
        if byte == 0x25:  # %
            if index + 2 >= length or raw[index + 1] not in _HEX or raw[index + 2] not in _HEX:
                raise InvalidPath("invalid percent-encoding in path")
            byte = int(raw[index + 1 : index + 3], 16)
            index += 3
            if byte in (0x2F, 0x5C):
                raise InvalidPath("encoded '/' or '\\' in path")
            if byte < 0x20 or byte == 0x7F:
                raise InvalidPath("encoded control character in path")
            if byte == 0x2E:
                encoded_dot = True
            out.append(chr(byte) if byte in _LITERAL else _ESCAPE[byte])
            continue
        if byte < 0x21 or byte == 0x7F:
            raise InvalidPath("control character or space in path")
        if byte == 0x5C:
            raise InvalidPath("'\\' in path")
        if byte == 0x3B:
            raise InvalidPath("';' path parameters are not accepted")
        if byte in (0x3F, 0x23):
            raise InvalidPath("'?' or '#' inside the path")
        out.append(chr(byte) if byte in _LITERAL else _ESCAPE[byte])
        index += 1
    text = "".join(out)
    if encoded_dot and text in (".", ".."):
        raise InvalidPath("encoded dot segment in path")
    return text


def canonical_path(raw: bytes) -> str:
    """Return the canonical form of a raw (still percent-encoded) request path or raise InvalidPath."""
    if not raw.startswith(b"/"):
        raise InvalidPath("path must start with '/'")
    if len(raw) > MAX_PATH_BYTES:
        raise InvalidPath("path too long")
    if not raw.translate(None, _FAST_BYTES) and b"//" not in raw and b"/." not in raw:
        return raw.decode("ascii")
    parts = raw[1:].split(b"/")
    stack: list[str] = []
    trailing = False
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        segment = _segment(part)
        if segment == "":
            trailing = last  # repeated slashes collapse; a final empty segment is a trailing slash
            continue
        trailing = False
        if segment == ".":
            trailing = last
        elif segment == "..":
            if not stack:
                raise InvalidPath("'..' climbs above the root")
            stack.pop()
            trailing = last
        else:
            stack.append(segment)
    path = "/" + "/".join(stack)
    if trailing and stack:
        path += "/"
    if _HIGH_ESCAPE.search(path):
        try:  # overlong forms (%C0%AE for '.'), surrogates, stray bytes: decoders disagree on what they mean
            unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath("invalid or overlong UTF-8 in path") from None
    return path


def second_reading(path: str) -> str | None:
    """Why an upstream that decodes `path` (canonical) once more, or normalises it to NFKC, could find a dot
    segment or a separator the gateway never saw; None when it could not."""
    if "%" not in path:
        return None
    if "%25" in path and _DOUBLE_ENCODED.search(path):
        return "double-encoded '.', '/' or '\\' in path"
    if _HIGH_ESCAPE.search(path):
        for char in unquote(path):
            if ord(char) <= 0x7F:
                continue
            compatible = unicodedata.normalize("NFKC", char)
            if _SEPARATORS.intersection(compatible):
                return f"U+{ord(char):04X} reads as '.', '/' or '\\' after Unicode normalisation"
            if compatible != char and any(ord(other) <= 0x7F for other in compatible):
                return f"U+{ord(char):04X} reads as {compatible!r} after Unicode normalisation"
    return None
