"""`gateway policy lint`: everything wrong or surprising in model.conf and policy files, with file and line.

Errors (exit code 1): a line that does not parse or would poison the enforcer, a model casbin cannot load, a
role that is granted but has no permission anywhere (usually a typo), a role inheritance cycle.
Warnings: duplicate lines, allow lines that a deny line always overrides, patterns no canonical path can match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.errors import InvalidPath
from gateway.paths import canonical_path
from gateway.policy.rules import ADMIN_OBJECT, ANY_DOMAIN, PolicyError, Rule, inherited, parse_line

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    source: str
    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Located:
    """A parsed rule and where it came from."""

    rule: Rule
    source: str
    line: int


def read_located(paths: list[Path]) -> tuple[list[Located], list[Finding]]:
    """Parse every line of every file, collecting all errors instead of stopping at the first."""
    located: list[Located] = []
    findings: list[Finding] = []
    for path in paths:
        source = str(path)
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                rule = parse_line(raw)
            except PolicyError as exc:
                findings.append(Finding(source, number, "error", str(exc)))
                continue
            if rule is not None:
                located.append(Located(rule, source, number))
    return located, findings


def _role_edges(rules: list[Located]) -> dict[str, set[str]]:
    """Role -> roles it inherits (g lines whose subject is a role, in any domain)."""
    edges: dict[str, set[str]] = {}
    for item in rules:
        sub, role, _ = item.rule.values if item.rule.ptype == "g" else ("", "", "")
        if item.rule.ptype == "g" and not sub.startswith("user:"):
            edges.setdefault(sub, set()).add(role)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each inheritance cycle once, as the path that closes it (`a -> b -> a`)."""
    cycles: list[list[str]] = []
    reported: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                cycles.append(cycle)
            return
        for parent in sorted(edges.get(node, ())):
            walk(parent, [*path, node])

    for start in sorted(edges):
        walk(start, [])
    return cycles


def _canonical(pattern: str) -> bool:
    """Whether some canonical request path could match: `:name` and `*` are literal-safe characters, so a
    pattern is reachable only if it is itself in canonical form."""
    if pattern == "*":
        return True
    path = pattern.removeprefix(ADMIN_OBJECT)  # a management object is `admin:` + a canonical path
    try:
        return canonical_path(path.encode()) == path
    except InvalidPath:
        return False


def pattern_covers(wide: str, narrow: str) -> bool:
    """True when every path keyMatch2 matches with `narrow` is also matched by `wide` (conservative)."""
    if wide in ("*", "/*") or wide == narrow:
        return True
    if narrow == "*":
        return False
    wide_parts, narrow_parts = wide.split("/"), narrow.split("/")
    for index, part in enumerate(wide_parts):
        if part == "*" and index == len(wide_parts) - 1:
            return len(narrow_parts) > index and narrow_parts[index] != ""
        if index >= len(narrow_parts):
            return False
        other = narrow_parts[index]
        if part.startswith(":"):
            if other == "" or other == "*":
                return False
            continue
        if part != other:
            return False
    return len(wide_parts) == len(narrow_parts)


def lint(model_path: Path, paths: list[Path]) -> list[Finding]:
    """Every finding for the model and the policy files, in file order."""
    from gateway.policy.hot import build_enforcer

    findings: list[Finding] = []
    try:
        build_enforcer(model_path, ())
    except Exception as exc:  # casbin raises assorted types for a bad model
        findings.append(Finding(str(model_path), 0, "error", f"casbin cannot load the model: {exc}"))
    located, parse_findings = read_located(paths)
    findings.extend(parse_findings)

    first_seen: dict[Rule, Located] = {}
    for item in located:
        if item.rule in first_seen:
            first = first_seen[item.rule]
            findings.append(Finding(item.source, item.line, "warning", f"duplicate of {first.source}:{first.line}"))
        else:
            first_seen[item.rule] = item

    edges = _role_edges(located)
    permitted = {item.rule.values[0] for item in located if item.rule.ptype == "p"}
    defined = {role for role in {*permitted, *edges} if role in permitted or inherited(edges, role) & permitted}
    for item in located:
        if item.rule.ptype == "g" and item.rule.values[1] not in defined:
            findings.append(
                Finding(
                    item.source,
                    item.line,
                    "error",
                    f"unknown role {item.rule.values[1]!r}: no policy line grants it anything",
                )
            )
    for cycle in _cycles(edges):
        item = next(i for i in located if i.rule.ptype == "g" and i.rule.values[0] == cycle[0])
        findings.append(Finding(item.source, item.line, "error", "role inheritance cycle: " + " -> ".join(cycle)))

    p_lines = [item for item in located if item.rule.ptype == "p"]
    denies = [item for item in p_lines if item.rule.values[4] == "deny"]
    for deny in denies:
        d_sub, d_dom, d_obj, d_act, _ = deny.rule.values
        bare = d_obj[:-2]
        if (
            d_obj.endswith("/*")
            and bare
            and not any(
                other.rule.values[:2] == (d_sub, d_dom)
                and other.rule.values[3] == d_act
                and pattern_covers(other.rule.values[2], bare)
                for other in denies
            )
        ):
            findings.append(
                Finding(
                    deny.source,
                    deny.line,
                    "warning",
                    f"deny {d_obj!r} does not cover {bare!r} itself (keyMatch2 '/*' needs a "
                    f"segment); add a deny line for {bare!r}",
                )
            )
    for item in p_lines:
        sub, dom, obj, act, eft = item.rule.values
        if not _canonical(obj):
            findings.append(
                Finding(
                    item.source, item.line, "warning", f"path pattern {obj!r} can never match a canonical request path"
                )
            )
        if eft != "allow":
            continue
        holders = {sub} | inherited(edges, sub)
        for deny in denies:
            d_sub, d_dom, d_obj, d_act, _ = deny.rule.values
            if d_sub in holders and d_dom in (dom, ANY_DOMAIN) and d_act in (act, "*") and pattern_covers(d_obj, obj):
                findings.append(
                    Finding(
                        item.source,
                        item.line,
                        "warning",
                        f"allow is always overridden by the deny at {deny.source}:{deny.line}",
                    )
                )
                break
    findings.sort(key=lambda f: (f.source, f.line))
    return findings
