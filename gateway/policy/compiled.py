"""A fast route to Casbin's own answers for the model this project ships.

pycasbin evaluates every policy line through a Python expression interpreter on each request (~190 µs with a
dozen lines). For `model.conf` as shipped, the same answer can be reached by indexing: the lines a request can
match are those whose subject is the caller or one of its roles in the org (`RoleIndex` computes that set the
way casbin's role manager answers `g(r.sub, p.sub, r.dom)`, without its per-domain rebuild, which is quadratic
in the size of an org), whose domain is the org or `*`, and whose action is the method or `*`; each of those
is tested with the very regex keyMatch2 would build. The effect is Casbin's allow-and-deny (the first matching
deny decides; otherwise the last matching allow), so both the decision and the explaining line equal
`enforce_ex`.

Used only when the loaded model is exactly that model (`supports`); any other model goes through casbin.
A differential test compares this path with a plain casbin.Enforcer on thousands of generated requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from casbin.util.builtin_operators import KEY_MATCH2_PATTERN

MATCHER = (
    '(r_dom == p_dom || p_dom == "*") && (r_act == p_act || p_act == "*") '
    "&& keyMatch2(r_obj, p_obj) && g(r_sub, p_sub, r_dom)"
)
EFFECT = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
ANY = "*"
_CACHE_MAX = 100_000

Candidate = tuple[Callable[[str], Any], bool, tuple[str, ...]]
MAX_HIERARCHY_LEVEL = 10
"""casbin's default: `g(a, b)` holds when b is at most 9 links above a."""


def domain_matches(domain: str, pattern: str) -> bool:
    """casbin's keyMatch, the domain matching function the engine installs for `g` (`*` matches every org)."""
    star = pattern.find("*")
    return domain == pattern if star == -1 else domain[:star] == pattern[:star]


class RoleIndex:
    """Role links by domain, answering which roles a subject holds in a domain exactly as casbin's domain role
    manager with keyMatch domains does: links of the domain itself plus those of every other domain pattern
    matching it, followed at most MAX_HIERARCHY_LEVEL - 1 links up."""

    def __init__(self, links: Iterable[tuple[str, str, str]]) -> None:
        self._links: dict[str, dict[str, list[str]]] = {}
        for child, parent, domain in links:
            self._links.setdefault(domain, {}).setdefault(child, []).append(parent)
        self._patterns = [domain for domain in self._links if "*" in domain]

    def roles(self, subject: str, domain: str) -> list[str]:
        tables = [self._links[domain]] if domain in self._links else []
        tables += [self._links[p] for p in self._patterns if p != domain and domain_matches(domain, p)]
        seen = {subject}
        found: list[str] = []
        frontier = [subject]
        for _ in range(MAX_HIERARCHY_LEVEL - 1):
            upper: list[str] = []
            for name in frontier:
                for table in tables:
                    for parent in table.get(name, ()):
                        if parent not in seen:
                            seen.add(parent)
                            upper.append(parent)
            if not upper:
                break
            found.extend(upper)
            frontier = upper
        return found


def supports(model: Any) -> bool:
    """True when `model` is exactly the shipped RBAC-with-domains, keyMatch2, deny-override model."""
    try:
        return (
            model["m"]["m"].value == MATCHER
            and model["e"]["e"].value == EFFECT
            and model["r"]["r"].tokens == ["r_sub", "r_dom", "r_obj", "r_act"]
            and model["p"]["p"].tokens == ["p_sub", "p_dom", "p_obj", "p_act", "p_eft"]
            and list(model["p"].keys()) == ["p"]
            and list(model["g"].keys()) == ["g"]
            and model["g"]["g"].value.replace(" ", "") == "_,_,_"
        )
    except (KeyError, AttributeError):
        return False


def key_match2_regex(pattern: str) -> re.Pattern[str]:
    """The regex casbin's keyMatch2 builds for `pattern`, compiled once."""
    key = pattern.replace("/*", "/.*")
    key = KEY_MATCH2_PATTERN.sub(r"\g<1>[^\/]+\g<2>", key, 0)
    if key == "*":
        key = "(.*)"
    return re.compile("^" + key + "$")


class CompiledPolicy:
    """Decisions over one immutable set of lines; caches are per instance, so a reload starts clean."""

    def __init__(self, p_rules: list[list[str]], roles: RoleIndex) -> None:
        self._roles = roles
        self._by_subject_domain: dict[tuple[str, str], list[int]] = {}
        # Patterns are compiled on first use, not here: compiling 10,000 distinct patterns took 0.4 s of every
        # reload, most of them for orgs that see no traffic before the next one.
        self._rules: list[tuple[str, str, bool, tuple[str, ...]]] = []
        self._regexes: dict[str, Callable[[str], Any]] = {}
        for index, values in enumerate(p_rules):
            sub, dom, obj, act, eft = values
            if eft not in ("allow", "deny"):
                raise ValueError(f"effect {eft!r} is not allow or deny")  # the caller falls back to casbin
            self._rules.append((act, obj, eft == "deny", tuple(values)))
            self._by_subject_domain.setdefault((sub, dom), []).append(index)
        self._candidates: dict[tuple[str, str, str], tuple[Candidate, ...]] = {}

    def _matcher(self, pattern: str) -> Callable[[str], Any]:
        match = self._regexes.get(pattern)
        if match is None:
            match = self._regexes[pattern] = key_match2_regex(pattern).match
        return match

    def _collect(self, subject: str, domain: str, action: str) -> tuple[Candidate, ...]:
        subjects = [subject, *self._roles.roles(subject, domain)]
        indices: set[int] = set()
        for name in subjects:
            indices.update(self._by_subject_domain.get((name, domain), ()))
            if domain != ANY:
                indices.update(self._by_subject_domain.get((name, ANY), ()))
        out: list[Candidate] = []
        for index in sorted(indices):
            act, pattern, is_deny, rule = self._rules[index]
            if act in (action, ANY):
                out.append((self._matcher(pattern), is_deny, rule))
        return tuple(out)

    def decide(self, subject: str, domain: str, obj: str, action: str) -> tuple[bool, tuple[str, ...]]:
        key = (subject, domain, action)
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self._collect(subject, domain, action)
            if len(self._candidates) >= _CACHE_MAX:
                del self._candidates[next(iter(self._candidates))]
            self._candidates[key] = candidates
        allowed = False
        explain: tuple[str, ...] = ()
        for match, is_deny, rule in candidates:
            if match(obj) is not None:
                if is_deny:
                    return False, rule  # casbin stops at the first matching deny
                allowed, explain = True, rule  # otherwise the last matching allow explains
        return allowed, explain
