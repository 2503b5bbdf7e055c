"""Where a browser may be sent after signing in: the return URL (`rd`) check, and the portal's own origin.

Both planes use this: the data plane builds `rd` from a request and sends the browser to the portal; the portal
checks it when the sign-in page is shown and again when the form is posted (REQ-B2), and the string it checks is
exactly the `Location` it answers with. A value passes (REQ-B1, REQ-B4) when it is

- a path on the portal itself: one `/`, then no second `/` or `\\` (not even after percent-decoding or behind
  spaces), no dot segments, controls or non-ASCII characters (look-alike slashes) on any decoding layer; or
- an absolute `https://` URL (`http://` only when `browser.cookie_secure` is off) on the portal's own host or an
  `allowed_hosts` entry (an exact host, or `.example.com` for its subdomains), on exactly that port, with no
  userinfo;

and, either way, is printable ASCII, at most `MAX_LENGTH` characters, with valid percent escapes and no query
value that itself looks like a URL (`http(s)://`, `//`, `javascript:`, `data:`; against redirect chaining
through the target). Anything else is replaced by the default, never repaired.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from gateway.settings import Browser, Settings

SIGN_IN_PATH = "/portal/sign-in"
"""The portal's sign-in page; `?rd=` carries the return URL."""
MAX_LENGTH = 2048
_ALLOWED_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_IPV6 = re.compile(r"\[[0-9a-f:.]{2,45}\]")
_SPLIT_SLASHES = re.compile(r"/ *[/\\]| /|/ ")
_CHAINED = ("http://", "https://", "//", "\\\\", "javascript:", "data:", "vbscript:")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def portal_origin(settings: Settings) -> str:
    """The portal's external origin (`https://auth.example.com`): `browser.public_url`, else the mail links'."""
    origin = settings.browser.public_url or settings.mail.public_base_url
    return origin.rstrip("/")


def sign_in_url(settings: Settings, return_url: str) -> str:
    """The absolute URL of the portal's sign-in page that comes back to `return_url` (checked by the portal)."""
    return f"{portal_origin(settings)}{SIGN_IN_PATH}?rd={quote(return_url, safe='')}"


def checked_return_url(value: str | None, *, settings: Settings, default: str) -> str:
    """`value` itself when it is an acceptable place to send a signed-in browser (see the module), else `default`."""
    if value is None or not acceptable(value, browser=settings.browser, portal=portal_origin(settings)):
        return default
    return value


def acceptable(value: str, *, browser: Browser, portal: str) -> bool:
    """Whether `value` may be a `Location` after sign-in, for a portal at origin `portal`."""
    if not value or len(value) > MAX_LENGTH or not _ALLOWED_CHARS.fullmatch(value) or _BAD_ESCAPE.search(value):
        return False
    if value.startswith("/"):
        path_ok = _safe_local_path(value)
    else:
        path_ok = _allowed_absolute(value, browser=browser, portal=portal)
    return path_ok and not _chains(value)


def _decodings(text: str) -> list[str]:
    """`text` and its percent-decodings until they stop changing (at most four): whatever layer a later hop
    decodes, each one is checked."""
    seen = [text]
    for _ in range(4):
        decoded = unquote(seen[-1], errors="strict") if "%" in seen[-1] else seen[-1]
        if decoded == seen[-1]:
            break
        seen.append(decoded)
    return seen


def _safe_local_path(value: str) -> bool:
    path = value.split("?", 1)[0].split("#", 1)[0]
    try:
        layers = _decodings(path)
    except UnicodeDecodeError:
        return False
    for layer in layers:
        if any(ord(ch) < 0x20 or ord(ch) >= 0x7F for ch in layer) or "\\" in layer:
            return False  # controls, DEL, non-ASCII (look-alike slashes) and backslashes: nowhere in a path
        if not layer.startswith("/") or _SPLIT_SLASHES.search(layer):
            return False  # `//`, `/ /`: a slash pair, even split by spaces, could be read as an authority
        if any(segment in (".", "..") for segment in layer.split("/")):
            return False  # `/./`, `/../` and `/.//evil` could all collapse into `//evil`
    return True


def _allowed_absolute(value: str, *, browser: Browser, portal: str) -> bool:
    scheme, sep, _ = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http") or (scheme == "http" and browser.cookie_secure):
        return False  # also `https:evil`, `https:/evil`, `javascript:`, `data:`, `//evil`
    try:
        parts = urlsplit(value)
    except ValueError:  # an unbalanced `[` in the authority
        return False
    netloc = parts.netloc
    if not netloc or "@" in netloc or "\\" in value or "%" in netloc:
        return False
    target = _host_port(netloc.lower(), scheme)
    if target is None:
        return False
    path = parts.path
    if path and not _safe_local_path(path):
        return False
    return any(_host_matches(target, entry, scheme) for entry in _allowed_entries(browser, portal, scheme))


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of a lower-cased authority, the scheme's default port when none is written; None when
    the host is not a plain DNS name, IPv4 address or bracketed IPv6 address, or the port is not 1-65535."""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if end < 0 or not _IPV6.fullmatch(host):
            return None
    else:
        host, colon, port_text = netloc.partition(":")
        rest = colon + port_text
        if not _HOST_NAME.fullmatch(host):
            return None  # also a trailing dot, `_`, `*` and an empty label
    if not rest:
        return host, _DEFAULT_PORTS[scheme]
    port_text = rest[1:]
    if not rest.startswith(":") or not port_text.isdigit() or port_text.startswith("0") or len(port_text) > 5:
        return None  # also `:+443`, `:0443` (another spelling of a port) and `:` alone
    if int(port_text) > 65535:
        return None
    return host, int(port_text)


def _allowed_entries(browser: Browser, portal: str, scheme: str) -> list[str]:
    entries = list(browser.allowed_hosts)
    portal_scheme, _, portal_netloc = portal.partition("://")
    if portal_scheme.lower() == scheme:  # the portal's own host, on its own scheme only
        entries.append(portal_netloc.lower())
    return entries


def _host_matches(target: tuple[str, int], entry: str, scheme: str) -> bool:
    entry = entry.strip().lower()
    if entry.startswith("."):
        suffix = _host_port(entry[1:], scheme)
        if suffix is None:
            return False
        host, port = target
        return host.endswith("." + suffix[0]) and port == suffix[1]
    return _host_port(entry, scheme) == target


def _chains(value: str) -> bool:
    """Whether a query value (or the fragment) holds a URL of its own (REQ-B4), on any decoding layer."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return True
    for raw in (parts.query, parts.fragment):
        if not raw:
            continue
        try:
            fields = [item for layer in _decodings(raw) for item in parse_qsl(layer, keep_blank_values=True)]
        except UnicodeDecodeError:
            return True
        for name, item in fields:
            for text in (name, item):
                lowered = text.strip().lower()
                if any(lowered.startswith(prefix) for prefix in _CHAINED):
                    return True
    return False
