"""The hot path's whole state: policy, organizations, live API keys and recently ended sessions, as one
immutable snapshot built aside and swapped atomically.

The data plane and the control plane's guard only read the current snapshot (`decide`, `org`, `roles_of`,
`api_key`, `session_revoked`): no database, no await. A reload fetches rows, builds a new casbin enforcer in a
worker thread, and replaces the snapshot in one assignment; reloads are serialised by a lock and skipped when
the stored version has not moved, so a burst of changes costs one or two reloads. A failed reload keeps the old
snapshot serving.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import gc
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import casbin
from casbin.model import FunctionMap
from casbin.util import key_match

from gateway.policy import compiled, delta
from gateway.policy.compiled import CompiledPolicy, RoleIndex, key_match2_regex
from gateway.policy.delta import ChangeRun, NotApplicable
from gateway.policy.recent import RecentRequests
from gateway.policy.rules import PolicyError, Rule
from gateway.policy.shadow import ShadowSpec, Tally

log = logging.getLogger("gateway.policy")


@dataclass(frozen=True, slots=True)
class OrgRef:
    """What the hot path knows about an organization."""

    id: str
    slug: str


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ADDRESSES_KNOWN = 1024


class AllowList:
    """Where an API key is accepted from (its `allowed_ips`), parsed once per snapshot. Answers are remembered:
    a key is used from the same few addresses again and again, and parsing an address costs more than the rest
    of the check (bounded: emptied when full; the next snapshot starts afresh)."""

    __slots__ = ("_answers", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)
        self._answers: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        known = self._answers.get(address)
        if known is None:
            known = _within(address, self.networks)
            if len(self._answers) >= _ADDRESSES_KNOWN:
                self._answers.clear()
            self._answers[address] = known
        return known


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    """`address` lies in one of `networks`; an IPv4 address seen through an IPv6 socket (`::ffff:203.0.113.7`)
    counts as itself. Not an address at all (a Unix socket's peer): outside every list."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return any(ip in network or (mapped is not None and mapped in network) for network in networks)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the hot path knows about an API key: enough to verify it and to narrow what it may do."""

    key_id: str
    key_hash: str
    user_id: str
    org: str
    scopes: tuple[tuple[str, str], ...]
    """(METHOD or *, keyMatch2 pattern) pairs; empty means the owner's roles apply unnarrowed."""
    expires_at: float | None
    allowed: AllowList | None = None
    """Where the key is accepted from; None (no `allowed_ips`): from anywhere, at no cost."""

    def permits(self, method: str, path: str) -> bool:
        return not self.scopes or any(
            m in (method, "*") and key_match2_regex(p).match(path) is not None for m, p in self.scopes
        )

    def accepts_from(self, address: str) -> bool:
        """True when the key may be used from the client address `address`."""
        return self.allowed is None or address in self.allowed


@dataclass(slots=True)  # made per request: frozen would cost an object.__setattr__ per field
class Decision:
    """The enforcer's answer and the policy line that decided it (empty when nothing matched)."""

    allowed: bool
    rule: tuple[str, ...]

    @property
    def reason(self) -> str:
        return describe_line(self.rule)


MATCHED = "matched "
"""How the audit reason of a decision made by a policy line starts; the line follows."""


@lru_cache(maxsize=4096)
def describe_line(rule: tuple[str, ...]) -> str:
    """The audit reason for a decision by `rule` (the same few lines decide most requests: built once each)."""
    if rule:
        return MATCHED + ", ".join(("p", *rule))
    return "no policy line matched (deny by default)"


@dataclass(frozen=True, slots=True)
class StateRows:
    """Everything a reload produces, from the database or from files."""

    rules: tuple[Rule, ...]
    orgs: tuple[OrgRef, ...] = ()
    version: int = 0
    keys: tuple[KeyRecord, ...] = ()
    revoked_sessions: frozenset[str] = frozenset()
    """Sessions revoked recently enough that access tokens naming them may still be unexpired."""
    model_text: str | None = None
    """A new model to switch to (file watching); None keeps the current one."""
    shadow: ShadowSpec | None = None
    """The active shadow policy, decided beside this one on proxied requests."""
    disabled: frozenset[str] = frozenset()
    """Subjects (`user:<id>`) of disabled users: lines and memberships naming them are left out (and stay out when
    changes are applied as deltas)."""
    links: tuple[tuple[str, str, str], ...] = ()
    """Outside identities linked to our users: (provider, subject at the provider, user id). Every link is held,
    a disabled user's too, so a token of theirs is refused rather than taken for an unlinked outsider."""
    memberships_from: int | None = None
    """Where in `rules` the lines made from memberships begin (those before are stored lines); None when unknown,
    and then changes are never applied as deltas to what is built from these rows."""


_VersionFn = Callable[[], Awaitable[int]]
_StateFn = Callable[[], Awaitable[StateRows]]
_ChangesFn = Callable[[int], Awaitable[ChangeRun | None]]
FULL_EVERY_SECONDS = 600.0
"""The safety net: a snapshot built from deltas for this long is rebuilt in full at the next change."""
FULL_EVERY_DELTAS = 2_000
"""... or after this many state versions applied as deltas."""


@dataclass(slots=True)
class _Snapshot:
    model_text: str
    _rules: tuple[Rule, ...]
    _enforcer: casbin.Enforcer | None
    orgs: dict[str, OrgRef]
    roles: dict[tuple[str, str], tuple[str, ...]]
    version: int
    loaded_at: float
    rule_count: int
    compiled: CompiledPolicy | None
    keys: dict[str, KeyRecord]
    revoked_sessions: frozenset[str]
    candidate: _Snapshot | None = None
    """The shadow policy's lines, built beside these (None without one)."""
    disabled: frozenset[str] = frozenset()
    grants: dict[tuple[str, str], tuple[str, ...]] | None = None
    """Stored `g` lines of users, (subject, domain) -> roles in stored order: a user's links in a domain are these,
    then the membership's role. None: this snapshot takes no deltas."""
    edits: tuple[tuple[bool, Rule], ...] = ()
    """Lines added (True) or removed since `_rules` was built, applied to it when `rules` is first read."""
    built_at: float = 0.0
    """time.monotonic() of the last full build this snapshot descends from."""
    links: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """(provider, subject) -> user id; changes to links always rebuild in full (no delta carries them)."""
    deltas: int = 0
    """State versions applied as deltas since that build."""

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every line, as a full read would list them (stored, then memberships'; order within a kind kept)."""
        if self.edits:
            rules = list(self._rules)
            for added, rule in self.edits:
                if added:
                    rules.append(rule)
                else:  # one copy: a stored grant may equal a membership's line, and then one stays
                    rules.remove(rule)
            self._rules, self.edits = tuple(rules), ()
        return self._rules

    def decide(self, subject: str, org: str, path: str, method: str, remember: bool) -> Decision:
        if self.compiled is not None:
            allowed, rule = self.compiled.decide(subject, org, path, method, remember=remember)
            return Decision(allowed, rule)
        allowed, line = self.enforcer.enforce_ex(subject, org, path, method)
        return Decision(bool(allowed), tuple(line))

    @property
    def enforcer(self) -> casbin.Enforcer:
        """casbin's own enforcer for these lines, built on first use: with the shipped model every decision
        comes from the compiled index, and only `explain` (the reference) needs casbin."""
        if self._enforcer is None:
            self._enforcer = build_enforcer(self.model_text, self.rules)
        return self._enforcer


def unknown_functions(model: casbin.model.Model) -> list[str]:
    """Functions the model's matcher calls that casbin does not provide (a typo such as `keyMatch9` loads fine
    and then fails every single decision)."""
    known = set(FunctionMap.load_function_map().get_functions())
    sections = set(model.keys())
    if "g" in sections:
        known |= set(model["g"].keys())
    matchers = model["m"] if "m" in sections else {}
    calls: list[str] = []
    for assertion in matchers.values():
        expression = re.sub(r"!(?!=)", " not ", assertion.value.replace("&&", " and ").replace("||", " or "))
        try:
            tree = ast.parse(expression, mode="eval")
        except SyntaxError as exc:
            raise PolicyError(f"the matcher is not a valid expression: {exc.msg}") from exc
        calls.extend(
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in known
        )
    return sorted(set(calls))


def build_enforcer(model: str | Path, rules: Collection[Rule]) -> casbin.Enforcer:
    """A casbin Enforcer for `model` (a file path, or the model text itself) holding exactly `rules`;
    `g` domains match `*` as a wildcard. A matcher calling an unknown function is a PolicyError."""
    text = model.read_text(encoding="utf-8") if isinstance(model, Path) else model
    parsed = casbin.Enforcer.new_model(text=text)
    unknown = unknown_functions(parsed)
    if unknown:
        raise PolicyError(
            f"the matcher calls {', '.join(f'{name}()' for name in unknown)}, which casbin does not provide"
        )
    enforcer = casbin.Enforcer(parsed)
    # Without this, `g, root, superadmin, *` names a literal domain "*" and never applies (casbin.md §2.3).
    enforcer.add_named_domain_matching_func("g", key_match)
    loaded = enforcer.get_model()
    for sec in ("p", "g"):
        # What casbin's add_policies does, minus its `rule in list` check per line (quadratic: a 10,000-line
        # reload took 3.5 s); duplicates are dropped here instead, keeping first-seen order.
        unique = dict.fromkeys(rule.values for rule in rules if rule.ptype == sec)
        loaded[sec][sec].policy.extend(list(values) for values in unique)
    # As casbin's own load_policy does after reading lines (both are no-ops for the shipped model).
    loaded.sort_policies_by_subject_hierarchy()
    loaded.sort_policies_by_priority()
    enforcer.build_role_links()
    return enforcer


def _compile(model_text: str, rules: Collection[Rule]) -> CompiledPolicy | None:
    """The fast path when the model is the shipped one; None (use casbin directly) otherwise. `p` lines are taken
    as casbin would hold them: duplicates dropped, first-seen order kept; `g` lines all (a duplicate link changes
    no answer, and a link given twice, by a stored line and a membership, must outlive the removal of one)."""
    if not compiled.supports(casbin.Enforcer.new_model(text=model_text)):
        log.warning("model.conf differs from the shipped model: decisions use casbin's evaluator directly")
        return None
    p_lines = [list(values) for values in dict.fromkeys(rule.values for rule in rules if rule.ptype == "p")]
    g_lines = (rule.values for rule in rules if rule.ptype == "g")
    try:
        return CompiledPolicy(p_lines, RoleIndex((child, parent, dom) for child, parent, dom in g_lines))
    except ValueError as exc:
        log.warning("policy not compilable (%s): decisions use casbin's evaluator directly", exc)
        return None


def _index_roles(rules: Iterable[Rule]) -> dict[tuple[str, str], tuple[str, ...]]:
    roles: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        if rule.ptype == "g" and rule.values[0].startswith(CALLERS):
            roles.setdefault((rule.values[0], rule.values[2]), []).append(rule.values[1])
    return {key: tuple(sorted(set(value))) for key, value in roles.items()}


CALLERS = ("user:", "ext:")
"""Subjects that call (users, outside subjects), as opposed to roles: `roles_of` answers for these."""


def _grants(stored: Iterable[Rule]) -> dict[tuple[str, str], tuple[str, ...]]:
    grants: dict[tuple[str, str], list[str]] = {}
    for rule in stored:
        if rule.ptype == "g" and rule.values[0].startswith("user:"):
            grants.setdefault((rule.values[0], rule.values[2]), []).append(rule.values[1])
    return {key: tuple(value) for key, value in grants.items()}


class HotState:
    """Everything a request's decision reads (see the module docstring); the only object the rest of the
    gateway asks about policy, organizations, API keys and ended sessions."""

    def __init__(self, model_path: str | Path, *, model_text: str | None = None) -> None:
        # The model is read once: a later edit of the file changes nothing unless a reload brings new text
        # (file watching), so a half-written model.conf can never reach a reload triggered by the database.
        self._model_text = model_text if model_text is not None else Path(model_path).read_text(encoding="utf-8")
        self._snapshot: _Snapshot | None = None
        self._lock = asyncio.Lock()
        self.recent = RecentRequests()
        """What `access.decisions.enforce` was asked lately, per org: policy previews replay it."""
        self.tally: Tally | None = None
        """What the active shadow policy would have decided otherwise (None without one)."""
        # Validate the model now so a broken model.conf fails at start, not on the first request.
        build_enforcer(self._model_text, ())

    def trial(self, state: StateRows) -> HotState:
        """Another state holding `state` with this one's model, for a preview; this one is not touched.
        Synchronous and CPU-bound (a whole build): call it in a thread."""
        other = HotState("", model_text=self._model_text)
        other.install(state)
        return other

    @property
    def version(self) -> int:
        return self._snapshot.version if self._snapshot else -1

    @property
    def loaded_at(self) -> float | None:
        return self._snapshot.loaded_at if self._snapshot else None

    @property
    def rule_count(self) -> int:
        return self._snapshot.rule_count if self._snapshot else 0

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise RuntimeError("policy not loaded")
        return snapshot

    # -- the hot path -------------------------------------------------------------------------------------

    def org(self, slug: str) -> OrgRef | None:
        """The organization with this slug, or None. Callers must do this before `decide`."""
        return self._current().orgs.get(slug)

    def api_key(self, key_id: str) -> KeyRecord | None:
        """The live (not revoked, owner enabled) key with this id, or None."""
        return self._current().keys.get(key_id)

    def session_revoked(self, session_id: str) -> bool:
        """True when the session (a login) was logged out or revoked: its access tokens stop at once."""
        return session_id in self._current().revoked_sessions

    def linked_user(self, provider: str, subject: str) -> str | None:
        """The id of our user linked to `subject` at the outside provider `provider`, or None."""
        return self._current().links.get((provider, subject))

    def user_disabled(self, user_id: str) -> bool:
        """True while our user `user_id` is disabled."""
        return "user:" + user_id in self._current().disabled

    def roles_of(self, subject: str, org: str) -> tuple[str, ...]:
        """Roles bound directly to `subject` in `org`, plus those it holds in every org (`*`)."""
        snapshot = self._current()
        local = snapshot.roles.get((subject, org), ())
        everywhere = snapshot.roles.get((subject, "*"), ())
        return local + everywhere if everywhere else local

    def decide(self, subject: str, org: str, path: str, method: str, *, remember: bool = True) -> Decision:
        """Casbin's decision for (subject, org, path, method). `org` must be a known slug (see `org`).
        `remember=False` keeps a one-off question out of the decision cache."""
        return self._current().decide(subject, org, path, method, remember)

    def rehearse(self, route: str, subject: str, org: str, path: str, method: str, live: Decision) -> None:
        """With a shadow policy attached, decide again by it and tally a different answer; nothing otherwise."""
        snapshot = self._snapshot
        tally = self.tally
        if snapshot is None or snapshot.candidate is None or tally is None:
            return
        other = snapshot.candidate.decide(subject, org, path, method, True)
        tally.count(route, org, subject, path, method, (live.allowed, live.rule), (other.allowed, other.rule))

    def lines_for(self, subject: str, org: str) -> list[tuple[str, ...]]:
        """The `p` lines that can decide for `subject` in `org` (its own and its roles', the org's and the
        platform-wide ones), in evaluation order: what the subject can (and cannot) do there."""
        snapshot = self._current()
        if snapshot.compiled is not None:
            return snapshot.compiled.lines_for(subject, org)
        # Another model: casbin's own answer (lines of the org's domain and its roles there).
        return [tuple(line) for line in snapshot.enforcer.get_implicit_permissions_for_user(subject, org)]

    def explain(self, subject: str, org: str, path: str, method: str) -> Decision:
        """The same decision, always computed by casbin's own `enforce_ex` (the reference)."""
        allowed, rule = self._current().enforcer.enforce_ex(subject, org, path, method)
        return Decision(bool(allowed), tuple(rule))

    # -- reloads ------------------------------------------------------------------------------------------

    def install(self, state: StateRows) -> None:
        """Build a snapshot from `state` and swap it in (synchronous; for files and tests)."""
        self._snapshot = self._build(state)
        self._follow_shadow(state.shadow)
        if state.model_text is not None:
            self._model_text = state.model_text

    def _follow_shadow(self, spec: ShadowSpec | None) -> None:
        """Keep the tally while the same shadow stays attached; start afresh for another; none without."""
        if spec is None:
            self.tally = None
        elif self.tally is None or self.tally.shadow_id != spec.id:
            self.tally = Tally(spec.id, spec.name)

    def _build(self, state: StateRows) -> _Snapshot:
        started = time.perf_counter()
        model_text = state.model_text or self._model_text
        fast = _compile(model_text, state.rules)
        snapshot = _Snapshot(
            model_text=model_text,
            _rules=state.rules,
            _enforcer=None if fast is not None else build_enforcer(model_text, state.rules),
            compiled=fast,
            keys={key.key_id: key for key in state.keys},
            revoked_sessions=state.revoked_sessions,
            orgs={org.slug: org for org in state.orgs},
            roles=_index_roles(state.rules),
            version=state.version,
            loaded_at=time.time(),
            rule_count=len(state.rules),
            disabled=state.disabled,
            grants=None if state.memberships_from is None else _grants(state.rules[: state.memberships_from]),
            built_at=time.monotonic(),
            links={(provider, subject): user_id for provider, subject, user_id in state.links},
        )
        if state.shadow is not None:
            rules = state.shadow.apply(state.rules)
            snapshot.candidate = self._build(StateRows(rules=rules, orgs=state.orgs, model_text=state.model_text))
        log.info(
            "policy version %d built: %d lines in %.1f ms",
            state.version,
            len(state.rules),
            (time.perf_counter() - started) * 1000,
        )
        return snapshot

    async def reload(
        self,
        fetch_version: _VersionFn,
        fetch_state: _StateFn,
        *,
        force: bool = False,
        fetch_changes: _ChangesFn | None = None,
    ) -> bool:
        """Reload if the stored version moved (or `force`); return True when a new snapshot was swapped in. With
        `fetch_changes` (the change log after a version), the versions since this snapshot's are applied as deltas
        when they all can be (`advance`); a gap, a change that says "rebuild", a shadow policy, `force` (a
        reconnection) and the safety net (FULL_EVERY_SECONDS, FULL_EVERY_DELTAS) rebuild everything instead.

        Serialised: concurrent callers wait, then find the version current and return at once.
        """
        async with self._lock:
            current = self._snapshot
            if not force and current is not None:
                version = await fetch_version()
                if version == current.version:
                    return False
                if fetch_changes is not None and _incremental(current):
                    run = await fetch_changes(current.version)
                    if run is not None and run.version >= version and await self._advance(current, run):
                        return True
            # A reload creates hundreds of thousands of objects; CPython's cyclic collector would scan them again
            # and again while they are made, in full passes that hold the GIL for 50-100 ms (bench/scale.py).
            # So it pauses for the reload, and the new snapshot is then frozen (never scanned; the previous one
            # is freed by reference counting as soon as it is replaced: snapshots hold no reference cycles).
            collecting = gc.isenabled()
            gc.disable()
            try:
                state = await fetch_state()
                snapshot = await asyncio.to_thread(self._build, state)
                self._snapshot = snapshot
                self._follow_shadow(state.shadow)
                if state.model_text is not None:
                    self._model_text = state.model_text
            finally:
                if collecting:
                    gc.freeze()
                    gc.enable()
            return True

    async def _advance(self, current: _Snapshot, run: ChangeRun) -> bool:
        """Apply `run` to `current` and swap the result in; False (nothing swapped) when it cannot be applied."""
        started, cpu = time.perf_counter(), time.process_time()
        try:
            applied = await asyncio.to_thread(advance, current, run)
        except NotApplicable as exc:
            log.info("policy version %d: %s; rebuilding in full", run.version, exc)
            return False
        snapshot, invalidated = applied
        if snapshot.compiled is not None and current.compiled not in (None, snapshot.compiled):
            # Here on the event loop, where decisions are made: every plan the old snapshot cached is handed over.
            subjects, domains, everything = invalidated
            snapshot.compiled.adopt(current.compiled, subjects=subjects, domains=domains, everything=everything)
        self._snapshot = snapshot
        log.info(
            "policy version %d applied: %d change(s) in %.1f ms (%.1f ms CPU)",
            run.version,
            len(run.changes),
            (time.perf_counter() - started) * 1000,
            (time.process_time() - cpu) * 1000,
        )
        return True


Invalidated = tuple[set[str], set[str], bool]


def advance(current: _Snapshot, run: ChangeRun) -> tuple[_Snapshot, Invalidated]:
    """A snapshot holding `current` with `run` applied (see `gateway.policy.delta`), and the cached plans that
    became stale (subjects, domains, everything). `current` is not changed. Raises NotApplicable."""
    if current.compiled is None or current.grants is None:
        raise NotApplicable("this snapshot takes no deltas")
    applied = delta.apply(
        run,
        compiled=current.compiled,
        roles=current.roles,
        keys=current.keys,
        revoked_sessions=current.revoked_sessions,
        grants=current.grants,
        orgs=current.orgs,
        disabled=current.disabled,
    )
    snapshot = dataclasses.replace(
        current,
        _enforcer=None,
        compiled=applied.compiled,
        roles=applied.roles,
        keys=applied.keys,
        revoked_sessions=applied.revoked_sessions,
        grants=applied.grants,
        edits=current.edits + tuple(applied.edits),
        rule_count=current.rule_count + sum(1 if added else -1 for added, _ in applied.edits),
        version=run.version,
        loaded_at=time.time(),
        deltas=current.deltas + run.version - current.version,
    )
    return snapshot, (applied.subjects, applied.domains, applied.everything)


def _incremental(snapshot: _Snapshot) -> bool:
    """Whether changes may be applied to `snapshot` as deltas."""
    return (
        snapshot.compiled is not None
        and snapshot.grants is not None
        and snapshot.candidate is None
        and snapshot.deltas < FULL_EVERY_DELTAS
        and time.monotonic() - snapshot.built_at < FULL_EVERY_SECONDS
    )
