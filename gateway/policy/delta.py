"""Changes a snapshot can take without a full rebuild (as read from the change log, `gateway.db.changes`), and
what applying a run of them makes: only the pieces they touch are copied, the rest is shared with the snapshot
they apply to (which stays as it was: decisions still using it see the state before the run)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.policy.compiled import ANY, CompiledPolicy
from gateway.policy.rules import Rule

if TYPE_CHECKING:
    from gateway.policy.hot import KeyRecord, OrgRef

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class LineChange:
    """A stored policy line added or removed."""

    rule: Rule
    added: bool


@dataclass(frozen=True, slots=True)
class MemberChange:
    """The membership of `subject` (`user:<id>`) in the org `org` went from role `old` to role `new` (None: none)."""

    subject: str
    org: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class KeyChange:
    """The key `key_id` works as `record` from now on (None: it stopped)."""

    key_id: str
    record: KeyRecord | None


@dataclass(frozen=True, slots=True)
class SessionRevoked:
    session_id: str


Change = LineChange | MemberChange | KeyChange | SessionRevoked


@dataclass(frozen=True, slots=True)
class ChangeRun:
    """The changes of the state versions after a snapshot's, up to and including `version`, in order."""

    version: int
    changes: tuple[Change, ...]


class NotApplicable(Exception):
    """The run cannot be applied to this snapshot (it does not hold what the run says was there): rebuild."""


@dataclass(slots=True)
class Applied:
    """The new pieces of a snapshot after a run, and which cached plans the run makes stale."""

    compiled: CompiledPolicy
    roles: dict[Pair, tuple[str, ...]]
    keys: dict[str, KeyRecord]
    revoked_sessions: frozenset[str]
    grants: dict[Pair, tuple[str, ...]]
    edits: list[tuple[bool, Rule]] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    """Plans of these subjects are stale, in every domain."""
    domains: set[str] = field(default_factory=set)
    """Plans in these domains are stale, for every subject."""
    everything: bool = False


def apply(
    run: ChangeRun,
    *,
    compiled: CompiledPolicy,
    roles: dict[Pair, tuple[str, ...]],
    keys: dict[str, KeyRecord],
    revoked_sessions: frozenset[str],
    grants: dict[Pair, tuple[str, ...]],
    orgs: Mapping[str, OrgRef],
    disabled: frozenset[str],
) -> Applied:
    """Apply `run` (see the module docstring). Left out, as a full read leaves them out: lines and memberships of
    disabled users, memberships in orgs not held (archived), keys of those. Raises NotApplicable when the run does
    not fit what is held (then the caller rebuilds)."""
    lines: list[tuple[bool, tuple[str, ...]]] = []
    present: dict[tuple[str, ...], bool] = {}
    links: dict[Pair, tuple[str, ...]] = {}
    new_grants = grants
    revoked: set[str] = set()
    new_keys: dict[str, KeyRecord] | None = None
    out = Applied(compiled, roles, keys, revoked_sessions, grants)

    def parents(child: str, domain: str) -> tuple[str, ...]:
        return links[(child, domain)] if (child, domain) in links else compiled.roles.parents(child, domain)

    for change in run.changes:
        if isinstance(change, LineChange):
            rule = change.rule
            if rule.values[0] in disabled:
                continue
            if rule.ptype == "p":
                if len(rule.values) != 5:
                    raise NotApplicable(f"a p line of {len(rule.values)} values")
                held = present.get(rule.values)
                if held is None:
                    held = compiled.has_line(rule.values)
                if held == change.added:
                    continue  # already so (a p line is stored once)
                present[rule.values] = change.added
                lines.append((change.added, rule.values))
                if rule.values[1] == ANY:
                    out.everything = True
                else:
                    out.domains.add(rule.values[1])
            elif rule.ptype == "g" and len(rule.values) == 3:
                child, parent, domain = rule.values
                current = parents(child, domain)
                if child.startswith("user:"):
                    stored = new_grants.get((child, domain), ())
                    if (parent in stored) == change.added:
                        continue
                    if current[: len(stored)] != stored:
                        raise NotApplicable(f"the links of {child} in {domain} are not as stored")
                    if new_grants is grants:
                        new_grants = dict(grants)
                    if change.added:
                        kept = (*stored, parent)
                    else:
                        at = stored.index(parent)
                        kept = stored[:at] + stored[at + 1 :]
                    if kept:
                        new_grants[(child, domain)] = kept
                    else:
                        new_grants.pop((child, domain), None)
                    links[(child, domain)] = kept + current[len(stored) :]
                    out.subjects.add(child)
                else:
                    if (parent in current) == change.added:
                        continue
                    if change.added:
                        links[(child, domain)] = (*current, parent)
                    else:
                        at = current.index(parent)
                        links[(child, domain)] = current[:at] + current[at + 1 :]
                    if "*" in domain:
                        out.everything = True  # a role linked in every org, or in a pattern of orgs
                    else:
                        out.domains.add(domain)
            else:
                raise NotApplicable(f"a {rule.ptype} line of {len(rule.values)} values")
            out.edits.append((change.added, rule))
        elif isinstance(change, MemberChange):
            subject, org = change.subject, change.org
            if org not in orgs or subject in disabled:
                continue
            stored = new_grants.get((subject, org), ())
            current = parents(subject, org)
            if current != stored + ((change.old,) if change.old else ()):
                raise NotApplicable(f"the membership of {subject} in {org} is not {change.old or 'none'}")
            links[(subject, org)] = stored + ((change.new,) if change.new else ())
            if change.old:
                out.edits.append((False, Rule("g", (subject, change.old, org))))
            if change.new:
                out.edits.append((True, Rule("g", (subject, change.new, org))))
            out.subjects.add(subject)
        elif isinstance(change, KeyChange):
            if new_keys is None:
                new_keys = dict(keys)
            record = change.record
            if record is None:
                new_keys.pop(change.key_id, None)
                continue
            owner = "user:" + record.user_id
            stored = new_grants.get((owner, record.org), ())
            member = len(parents(owner, record.org)) > len(stored)
            if record.org in orgs and owner not in disabled and member:
                new_keys[change.key_id] = record
            else:
                new_keys.pop(change.key_id, None)
        else:
            revoked.add(change.session_id)
    if lines or links:
        try:
            out.compiled = compiled.advance(lines, links)
        except ValueError as exc:
            raise NotApplicable(str(exc)) from exc
    touched = {pair for pair in links if pair[0].startswith(("user:", "ext:"))}  # hot.CALLERS: roles_of answers
    if touched:
        out.roles = dict(roles)
        for pair in touched:
            linked = links[pair]
            if linked:
                out.roles[pair] = tuple(sorted(set(linked)))
            else:
                out.roles.pop(pair, None)
    out.grants = new_grants
    if new_keys is not None:
        out.keys = new_keys
    if revoked:
        out.revoked_sessions = revoked_sessions | revoked
    return out
