"""A fast route to Casbin's own answers for the model this project ships.

pycasbin evaluates every policy line through a Python expression interpreter on each request (~190 µs with a
dozen lines). For `model.conf` as shipped, the same answer can be reached by indexing: the lines a request can
match are those whose subject is the caller or one of its roles in the org (`RoleIndex` computes that set the
way casbin's role manager answers `g(r.sub, p.sub, r.dom)`, without its per-domain rebuild, which is quadratic
in the size of an org), whose domain is the org or `*`, and whose action is the method or `*`; each of those
is tested with the very regex keyMatch2 would build. The effect is Casbin's allow-and-deny (the first matching
deny decides; otherwise the last matching allow), so both the decision and the explaining line equal
`enforce_ex`.

A subject with many lines in one domain (a role holding hundreds of endpoints) is not scanned line by line: its
lines sit in a segment trie (`PathIndex`: literal segments, `:param` segments, a final `/*`) that yields every
line whose pattern matches the path, and the effect is computed over their line numbers (the lowest matching
deny, else the highest matching allow), so the deciding line is still Casbin's. Patterns the trie cannot hold
exactly (a `*` elsewhere, a regex character, a `:` inside a segment) are tested with their regex beside it.

Used only when the loaded model is exactly that model (`supports`); any other model goes through casbin.
A differential test compares this path with a plain casbin.Enforcer on thousands of generated requests.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from casbin.util.builtin_operators import KEY_MATCH2_PATTERN

MATCHER = (
    '(r_dom == p_dom || p_dom == "*") && (r_act == p_act || p_act == "*") '
    "&& keyMatch2(r_obj, p_obj) && g(r_sub, p_sub, r_dom)"
)
EFFECT = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
ANY = "*"
_CACHE_MAX = 100_000
INDEX_MIN_LINES = 12
"""A subject's lines in one domain from which a `PathIndex` answers instead of one regex per line."""
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")

Candidate = tuple[Callable[[str], Any], bool, tuple[str, ...], int]
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

    def parents(self, child: str, domain: str) -> tuple[str, ...]:
        """The roles `child` links to in exactly `domain` (patterns not applied), in the order they were given."""
        return tuple(self._links.get(domain, {}).get(child, ()))

    def relinked(self, changed: Mapping[tuple[str, str], tuple[str, ...]]) -> RoleIndex:
        """Another index where each (child, domain) of `changed` links to exactly those roles (none: unlinked);
        only the domains touched are copied, every other table is shared with this one."""
        other = RoleIndex(())
        links = dict(self._links)
        copied: set[str] = set()
        for (child, domain), parents in changed.items():
            if domain not in copied:
                links[domain] = dict(links.get(domain, {}))
                copied.add(domain)
            if parents:
                links[domain][child] = list(parents)
            else:
                links[domain].pop(child, None)
        for domain in copied:
            if not links[domain]:
                del links[domain]
        other._links = links
        other._patterns = [domain for domain in links if "*" in domain]
        return other

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


class _Node:
    __slots__ = ("end", "literal", "param", "rest")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.end: list[int] = []
        """Lines whose pattern ends here."""
        self.rest: list[int] = []
        """Lines whose pattern ends here with `/*`: one more segment or more, of any content."""


def _segments(pattern: str) -> tuple[list[str | None], bool] | None:
    """A pattern as trie segments (None for a `:param` segment) and whether it ends with `/*`; None when
    keyMatch2's regex for it is not exactly that (a `*` elsewhere, a regex character, a `:` inside a segment)."""
    rest = pattern.endswith("/*")
    body = pattern[:-2] if rest else pattern
    if "*" in body:
        return None
    out: list[str | None] = []
    for segment in body.split("/"):
        if segment.startswith(":") and len(segment) > 1:
            out.append(None)  # keyMatch2 turns the whole segment into [^/]+
        elif ":" in segment[:-1] or not _REGEX_SPECIAL.isdisjoint(segment):
            return None
        else:
            out.append(segment)
    return out, rest


class PathIndex:
    """The lines of one subject in one domain, found by path segments instead of one regex per line."""

    __slots__ = ("_everything", "_fallback", "_root")

    def __init__(self, lines: Iterable[tuple[int, str]], matcher: Callable[[str], Callable[[str], Any]]) -> None:
        self._root = _Node()
        self._everything: list[int] = []
        self._fallback: list[tuple[int, Callable[[str], Any]]] = []
        for index, pattern in lines:
            shape = None if pattern == ANY else _segments(pattern)
            if pattern == ANY:
                self._everything.append(index)
            elif shape is None:
                self._fallback.append((index, matcher(pattern)))
            else:
                node = self._root
                for segment in shape[0]:
                    if segment is None:
                        node.param = node = node.param or _Node()
                    else:
                        node = node.literal.setdefault(segment, _Node())
                (node.rest if shape[1] else node.end).append(index)

    def collect(self, obj: str, segments: list[str], out: list[int]) -> None:
        """Append the lines whose pattern matches `obj` (already split at `/`), in no particular order."""
        out.extend(self._everything)
        for index, match in self._fallback:
            if match(obj) is not None:
                out.append(index)
        _walk(self._root, segments, 0, out)


def _walk(node: _Node, segments: list[str], at: int, out: list[int]) -> None:
    if at == len(segments):
        out.extend(node.end)
        return
    if node.rest:
        out.extend(node.rest)
    segment = segments[at]
    child = node.literal.get(segment)
    if child is not None:
        _walk(child, segments, at + 1, out)
    if node.param is not None and segment:
        _walk(node.param, segments, at + 1, out)


Plan = tuple[tuple[Candidate, ...], tuple[PathIndex, ...]]


PlanKey = tuple[str, str, str]
"""(subject, domain, action): what a cached plan answers for."""


class CompiledPolicy:
    """Decisions over one immutable set of lines. A full reload starts with empty caches; a delta (`advance`) makes
    another instance sharing everything it does not change, and `adopt` hands it the plans the change cannot
    affect."""

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
        self._plans: OrderedDict[PlanKey, Plan] = OrderedDict()
        # The cached plans by subject and by domain, so a change drops exactly the plans it can affect.
        self._plans_of_subject: dict[str, set[PlanKey]] = {}
        self._plans_in_domain: dict[str, set[PlanKey]] = {}
        self._indexes: dict[tuple[str, str], PathIndex] = {}

    @property
    def roles(self) -> RoleIndex:
        return self._roles

    def has_line(self, values: Sequence[str]) -> bool:
        """Whether the `p` line with these values is held."""
        wanted = tuple(values)
        return any(self._rules[index][3] == wanted for index in self._by_subject_domain.get((wanted[0], wanted[1]), ()))

    def advance(
        self, lines: Sequence[tuple[bool, Sequence[str]]], links: Mapping[tuple[str, str], tuple[str, ...]]
    ) -> CompiledPolicy:
        """Another policy: these `p` lines added (True) or removed (False), in order, and these role links (see
        `RoleIndex.relinked`). Added lines come after every held line, as a full read lists them (by id). Shared
        with this one: the line table (append-only: this instance never refers to what is appended), compiled
        regexes, and path indexes of the (subject, domain) pairs no line changed. Its plan cache is empty until
        `adopt`. Raises ValueError for an effect that is not allow or deny."""
        other = object.__new__(CompiledPolicy)
        other._roles = self._roles.relinked(links) if links else self._roles
        other._rules = self._rules
        other._regexes = self._regexes
        by_pair = dict(self._by_subject_domain) if lines else self._by_subject_domain
        touched: set[tuple[str, str]] = set()
        for added, values in lines:
            sub, dom, obj, act, eft = values
            if eft not in ("allow", "deny"):
                raise ValueError(f"effect {eft!r} is not allow or deny")
            key, wanted = (sub, dom), tuple(values)
            held = by_pair.get(key, [])
            if added:
                if any(self._rules[index][3] == wanted for index in held):
                    continue
                self._rules.append((act, obj, eft == "deny", wanted))
                by_pair[key] = [*held, len(self._rules) - 1]
            else:
                kept = [index for index in held if self._rules[index][3] != wanted]
                if len(kept) == len(held):
                    continue
                if kept:
                    by_pair[key] = kept
                else:
                    by_pair.pop(key, None)
            touched.add(key)
        other._by_subject_domain = by_pair
        # Copied in one step first: decisions on this policy may add path indexes meanwhile (another thread).
        indexes = dict(self._indexes)
        other._indexes = {key: index for key, index in indexes.items() if key not in touched}
        other._plans = OrderedDict()
        other._plans_of_subject = {}
        other._plans_in_domain = {}
        return other

    def adopt(self, old: CompiledPolicy, *, subjects: Iterable[str], domains: Iterable[str], everything: bool) -> None:
        """Take over `old`'s cached plans but those of `subjects` (in any domain) and of `domains` (for any subject),
        or none with `everything`; `old` keeps an empty cache. Call it where decisions are made (the event loop)
        just before this instance replaces `old`, so no plan `old` computes meanwhile is missed."""
        plans, of_subject, in_domain = old._plans, old._plans_of_subject, old._plans_in_domain
        old._plans, old._plans_of_subject, old._plans_in_domain = OrderedDict(), {}, {}
        if everything:
            return
        for subject in subjects:
            for key in of_subject.pop(subject, ()):
                plans.pop(key, None)
                _forget(in_domain, key[1], key)
        for domain in domains:
            for key in in_domain.pop(domain, ()):
                plans.pop(key, None)
                _forget(of_subject, key[0], key)
        self._plans, self._plans_of_subject, self._plans_in_domain = plans, of_subject, in_domain

    def _matcher(self, pattern: str) -> Callable[[str], Any]:
        match = self._regexes.get(pattern)
        if match is None:
            match = self._regexes[pattern] = key_match2_regex(pattern).match
        return match

    def lines_for(self, subject: str, domain: str) -> list[tuple[str, ...]]:
        """Every `p` line that can decide for `subject` in `domain` (its own and its roles', here and in `*`), in
        the order casbin evaluates them."""
        indices: set[int] = set()
        for name in (subject, *self._roles.roles(subject, domain)):
            indices.update(self._by_subject_domain.get((name, domain), ()))
            if domain != ANY:
                indices.update(self._by_subject_domain.get((name, ANY), ()))
        return [self._rules[index][3] for index in sorted(indices)]

    def _index(self, subject: str, domain: str, lines: list[int]) -> PathIndex:
        index = self._indexes.get((subject, domain))
        if index is None:
            pairs = ((line, self._rules[line][1]) for line in lines)
            index = self._indexes[(subject, domain)] = PathIndex(pairs, self._matcher)
        return index

    def _collect(self, subject: str, domain: str, action: str) -> Plan:
        """The lines a request by `subject` in `domain` for `action` can match: a few as regexes, a subject's
        many lines in one domain as its `PathIndex` (filtered by action when they match)."""
        subjects = [subject, *self._roles.roles(subject, domain)]
        indices: set[int] = set()
        indexes: list[PathIndex] = []
        for name in subjects:
            for dom in (domain, ANY) if domain != ANY else (domain,):
                lines = self._by_subject_domain.get((name, dom))
                if not lines:
                    continue
                if len(lines) >= INDEX_MIN_LINES:
                    indexes.append(self._index(name, dom, lines))
                else:
                    indices.update(lines)
        out: list[Candidate] = []
        for index in sorted(indices):
            act, pattern, is_deny, rule = self._rules[index]
            if act in (action, ANY):
                out.append((self._matcher(pattern), is_deny, rule, index))
        return tuple(out), tuple(indexes)

    def decide(
        self, subject: str, domain: str, obj: str, action: str, *, remember: bool = True
    ) -> tuple[bool, tuple[str, ...]]:
        """`remember=False` for one-off questions (an admin's who-can over a whole org): the plan is used and
        dropped, so the proxy's warm plans stay."""
        key = (subject, domain, action)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._collect(subject, domain, action)
            if remember:
                if len(self._plans) >= _CACHE_MAX:
                    stale, _ = self._plans.popitem(last=False)  # the least recently used
                    _forget(self._plans_of_subject, stale[0], stale)
                    _forget(self._plans_in_domain, stale[1], stale)
                self._plans[key] = plan
                self._plans_of_subject.setdefault(subject, set()).add(key)
                self._plans_in_domain.setdefault(domain, set()).add(key)
        else:
            self._plans.move_to_end(key)
        candidates, indexes = plan
        if not indexes or "\n" in obj:  # a newline: regexes and segments could disagree; ask the regexes
            if indexes:
                candidates = self._with_indexed(candidates, indexes, action)
            allowed = False
            explain: tuple[str, ...] = ()
            for match, is_deny, rule, _ in candidates:
                if match(obj) is not None:
                    if is_deny:
                        return False, rule  # casbin stops at the first matching deny
                    allowed, explain = True, rule  # otherwise the last matching allow explains
            return allowed, explain
        return self._decide_indexed(candidates, indexes, obj, action)

    def _decide_indexed(
        self, candidates: tuple[Candidate, ...], indexes: tuple[PathIndex, ...], obj: str, action: str
    ) -> tuple[bool, tuple[str, ...]]:
        """The same effect over line numbers: the lowest matching deny decides, else the highest matching
        allow (the order casbin evaluates lines in)."""
        deny = allow = -1
        for match, is_deny, _, line in candidates:
            if match(obj) is not None:
                if is_deny:
                    deny = line
                    break
                allow = line
        matched: list[int] = []
        segments = obj.split("/")
        for index in indexes:
            index.collect(obj, segments, matched)
        rules = self._rules
        for line in matched:
            act, _, is_deny, _ = rules[line]
            if act != action and act != ANY:
                continue
            if is_deny:
                if deny == -1 or line < deny:
                    deny = line
            elif line > allow:
                allow = line
        if deny != -1:
            return False, rules[deny][3]
        return (True, rules[allow][3]) if allow != -1 else (False, ())

    def _with_indexed(
        self, candidates: tuple[Candidate, ...], indexes: tuple[PathIndex, ...], action: str
    ) -> tuple[Candidate, ...]:
        """Every candidate as a regex, the indexed ones included (the rare path with a newline)."""
        lines = {line for *_, line in candidates}
        for (name, dom), index in self._indexes.items():
            if index in indexes:
                lines.update(self._by_subject_domain[(name, dom)])
        out: list[Candidate] = []
        for line in sorted(lines):
            act, pattern, is_deny, rule = self._rules[line]
            if act in (action, ANY):
                out.append((self._matcher(pattern), is_deny, rule, line))
        return tuple(out)


def _forget(keys: dict[str, set[PlanKey]], name: str, key: PlanKey) -> None:
    held = keys.get(name)
    if held is not None:
        held.discard(key)
        if not held:
            del keys[name]
