"""Policy lines: parse Casbin CSV text and refuse values that would poison or surprise the enforcer.

Casbin's own CSV reader has no quoting (a comma splits a value), keeps an inline `# comment` as part of the
last value, and keyMatch2 turns a policy path into an unescaped regex (`.` matches anything, `(` raises at
enforce time). So every line is checked here, before it reaches the database or the enforcer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
USER_SUBJECT_RE = re.compile(r"^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EXTERNAL_SUBJECT_RE = re.compile(r"^ext:[a-z0-9][a-z0-9_-]{0,31}:[\x21-\x7e]{1,255}$")
"""A caller with an outside access token and no linked user: `ext:<trusted issuer name>:<its subject>`."""
ORG_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
EFFECTS = frozenset({"allow", "deny"})
ANY_DOMAIN = "*"
ADMIN_OBJECT = "admin:"
"""Objects of the management API are `admin:` + the path after `/admin` (`admin:/orgs/acme/members`). Proxied
paths always start with `/`, so a proxied grant such as `/*` can never reach the management plane."""
# A pattern segment is a literal (unreserved characters or canonical %XX escapes), `:name` or `*`.
_LITERAL_SEGMENT_RE = re.compile(r"^(?:[A-Za-z0-9_~-]|%[0-9A-F]{2})+$")
_PARAM_SEGMENT_RE = re.compile(r"^:[A-Za-z_][A-Za-z0-9_]*$")


class PolicyError(ValueError):
    """A policy line is invalid; the message names the field and, for files, the file and line."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One normalised Casbin line: `p` rules always carry their effect."""

    ptype: str
    values: tuple[str, ...]

    def csv(self) -> str:
        return ", ".join((self.ptype, *self.values))


def is_org_slug(value: str) -> bool:
    return bool(ORG_SLUG_RE.match(value))


def is_subject(value: str) -> bool:
    return bool(ROLE_RE.match(value) or USER_SUBJECT_RE.match(value) or EXTERNAL_SUBJECT_RE.match(value))


def is_admin_pattern(pattern: str) -> bool:
    """True for a line about the management API (or `*`, which matches it too)."""
    return pattern == "*" or pattern.startswith(ADMIN_OBJECT)


def _check_pattern(pattern: str) -> None:
    if pattern == "*":
        return
    path = pattern.removeprefix(ADMIN_OBJECT)
    if not path.startswith("/"):
        raise PolicyError(f"path pattern {pattern!r}: must start with '/' (or 'admin:/' for the management API)")
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if segment == "" and index == len(segments) - 1:
            continue  # a trailing slash is literal and significant
        if segment == "*" or _PARAM_SEGMENT_RE.match(segment) or _LITERAL_SEGMENT_RE.match(segment):
            continue
        if segment in (".", ".."):
            raise PolicyError(f"path pattern {pattern!r}: dot segments never occur in a canonical path")
        raise PolicyError(
            f"path pattern {pattern!r}: segment {segment!r} is not a literal (letters, digits, '-', '_', '~', "
            "%XX), ':name' or '*' ('.' and other regex characters would be wildcards in keyMatch2)"
        )


def _check_value(field: str, value: str) -> None:
    if value == "":
        raise PolicyError(f"{field}: must not be empty")
    if value != value.strip():
        raise PolicyError(f"{field}: must not have surrounding whitespace")
    if "," in value or "#" in value or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise PolicyError(f"{field}: must not contain commas, '#', whitespace or control characters")


def validate(ptype: str, values: tuple[str, ...]) -> Rule:
    """Return the normalised rule or raise PolicyError naming the field."""
    if ptype == "p":
        if len(values) not in (4, 5):
            raise PolicyError("p: expected 'p, role, org, path, method[, allow|deny]'")
        for field, value in zip(("subject", "org", "path", "method", "effect"), values, strict=False):
            _check_value(field, value)
        sub, dom, obj, act = values[:4]
        eft = values[4] if len(values) == 5 else "allow"
        if not is_subject(sub):
            raise PolicyError(
                f"subject {sub!r}: must be a role name (a-z, 0-9, '_', '-'), user:<uuid> or ext:<issuer>:<subject>"
            )
        if dom != ANY_DOMAIN and not is_org_slug(dom):
            raise PolicyError(f"org {dom!r}: must be an organization slug or '*'")
        _check_pattern(obj)
        if act not in METHODS:
            raise PolicyError(f"method {act!r}: must be one of {', '.join(sorted(METHODS))}")
        if eft not in EFFECTS:
            raise PolicyError(f"effect {eft!r}: must be 'allow' or 'deny'")
        return Rule("p", (sub, dom, obj, act, eft))
    if ptype == "g":
        if len(values) != 3:
            raise PolicyError("g: expected 'g, subject, role, org'")
        for field, value in zip(("subject", "role", "org"), values, strict=True):
            _check_value(field, value)
        sub, role, dom = values
        if not is_subject(sub):
            raise PolicyError(f"subject {sub!r}: must be a role name, user:<uuid> or ext:<issuer>:<subject>")
        if not ROLE_RE.match(role):
            raise PolicyError(f"role {role!r}: must be a role name (a-z, 0-9, '_', '-')")
        if dom != ANY_DOMAIN and not is_org_slug(dom):
            raise PolicyError(f"org {dom!r}: must be an organization slug or '*'")
        return Rule("g", (sub, role, dom))
    raise PolicyError(f"ptype {ptype!r}: must be 'p' or 'g'")


def parse_line(raw: str) -> Rule | None:
    """One line of Casbin CSV: a Rule, None for a blank or `#` comment line, or PolicyError."""
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    if "#" in line:
        raise PolicyError("inline comments are not allowed (Casbin keeps them as data)")
    ptype, *values = (token.strip() for token in line.split(","))
    return validate(ptype, tuple(values))


def parse_text(text: str, source: str = "<policy>") -> list[Rule]:
    """Parse Casbin CSV; whole-line `#` comments and blank lines are skipped; errors name file and line."""
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            rule = parse_line(raw)
        except PolicyError as exc:
            raise PolicyError(f"{source}:{number}: {exc}") from None
        if rule is not None:
            rules.append(rule)
    return rules


def parse_files(paths: list[Path]) -> list[Rule]:
    rules: list[Rule] = []
    for path in paths:
        rules.extend(parse_text(path.read_text(encoding="utf-8"), str(path)))
    return rules


def inherited(parents: dict[str, set[str]], start: str) -> set[str]:
    """Every role `start` inherits through any chain of `parents` (role -> roles it inherits directly)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen
