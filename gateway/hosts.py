"""Host names as the gateway compares them: a received Host normalised once, configured host patterns checked.

Both sides are compared in one form: lower case, no trailing dot, no port, IDNA names as punycode exactly as
received (a host sent as raw UTF-8 is malformed, never converted). Below both planes: settings validate
configured hosts with it, the data plane normalises what requests say.
"""

from __future__ import annotations

import re

from gateway.errors import BadRequest

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6_RE = re.compile(r"\[[0-9a-f:.]{2,45}\]")
_PORT_RE = re.compile(r"[0-9]{1,5}")
ORG_LABEL = "{org}"
"""Stands for the organization slug in an `org_host` pattern."""


class MalformedHost(BadRequest):
    """The Host (or, from a trusted proxy, X-Forwarded-Host) is not a host name: 400."""

    slug = "malformed-host"
    title = "Malformed Host"


def _name(text: str) -> str | None:
    """`text` lower-cased, without one trailing dot, if it is a host name or bracketed IPv6 literal."""
    text = text.lower()
    if text.startswith("["):
        return text if _IPV6_RE.fullmatch(text) else None
    if text.endswith("."):
        text = text[:-1]
    if len(text) > 253 or not _NAME_RE.fullmatch(text):
        return None
    return text


def normalise_host(value: str | None) -> str | None:
    """The host a request names, in the compared form; None when it names none (no or an empty Host). Raises
    MalformedHost for anything else that is not `name[:port]` or `[v6][:port]`."""
    if value is None or not (text := value.strip()):
        return None
    host, port = text, ""
    colon = text.rfind(":")
    if colon != -1 and (not text.startswith("[") or text[colon - 1] == "]"):
        host, port = text[:colon], text[colon + 1 :]
        if not _PORT_RE.fullmatch(port) or int(port) > 65535:
            raise MalformedHost("Host: the port is not a number between 0 and 65535")
    name = _name(host)
    if name is None:
        raise MalformedHost("Host: not a host name (IDNA names are sent as punycode)")
    return name


def configured_host(pattern: str) -> str:
    """A `hosts` entry in the compared form: an exact name or `*.` + a name (one leading wildcard label).
    Raises ValueError saying what is wrong."""
    wildcard = pattern.startswith("*.")
    rest = pattern[2:] if wildcard else pattern
    if "*" in rest:
        raise ValueError("a wildcard is one whole leading label, such as *.apps.example.com")
    if ":" in rest and not rest.startswith("["):
        raise ValueError("a host name without a port")
    name = _name(rest)
    if name is None or (wildcard and name.startswith("[")):
        raise ValueError("not a host name (write IDNA names as punycode, xn--...)")
    return "*." + name if wildcard else name


def host_template(pattern: str) -> tuple[str, ...]:
    """An `org_host` pattern as its labels, one of them `{org}` (the slug's place). Raises ValueError."""
    labels = tuple(pattern.lower().rstrip(".").split("."))
    if labels.count(ORG_LABEL) != 1:
        raise ValueError("needs {org} exactly once, as a whole label, such as {org}.apps.example.com")
    if len(labels) < 2:
        raise ValueError("needs at least one label besides {org}")
    if any(label != ORG_LABEL and _name(label) != label for label in labels):
        raise ValueError("its other labels must be host-name labels")
    return labels


def label_in(template: tuple[str, ...], host: str | None) -> str:
    """The label of `host` in the `{org}` place of `template`, or "" when the host does not fit it exactly."""
    if host is None:
        return ""
    labels = host.split(".")
    if len(labels) != len(template):
        return ""
    found = ""
    for label, expected in zip(labels, template, strict=True):
        if expected == ORG_LABEL:
            found = label
        elif label != expected:
            return ""
    return found
