"""Roles of an org: the four system roles everywhere, plus custom roles made of `p` and `g` lines in its domain."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import Membership, Organization, PolicyRule, Role, utcnow
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.manage import versions
from gateway.manage.common import (
    Actor,
    Page,
    check_if_match,
    check_limit,
    decode_cursor,
    encode_cursor,
    lock_org,
    record,
)
from gateway.manage.ownership import OWNER, owners_guarded, owners_object, role_graph
from gateway.policy import rules, store
from gateway.policy.compiled import key_match2_regex
from gateway.policy.rules import ANY_DOMAIN, ROLE_RE, Rule, inherited

SYSTEM_ROLES = ("owner", "admin", "member", "viewer")
SUPERADMIN = "superadmin"


@dataclass(frozen=True, slots=True)
class Permission:
    """What a role may (or, with `deny`, may not) do on proxied paths."""

    path: str
    methods: tuple[str, ...]
    effect: str = "allow"


@dataclass(frozen=True, slots=True)
class RoleView:
    name: str
    system: bool
    description: str
    permissions: tuple[Permission, ...]
    inherits: tuple[str, ...]
    version: int


async def custom_role(session: AsyncSession, org: Organization, name: str) -> Role | None:
    return await session.scalar(select(Role).where(Role.org_id == org.id, Role.name == name))


async def require_role(session: AsyncSession, org: Organization, name: str, field: str = "role") -> None:
    """422 unless `name` is a system role or a custom role of this org."""
    if name == SUPERADMIN:
        raise Unprocessable(f"{field}: superadmin is granted platform-wide, never in an org")
    if name in SYSTEM_ROLES:
        return
    if not ROLE_RE.match(name) or await custom_role(session, org, name) is None:
        raise Unprocessable(f"{field}: no role {name!r} in this organization")


async def implies_owner(session: AsyncSession, org: Organization, name: str) -> bool:
    """True when holding `name` in this org means holding `owner` (it is owner, or inherits it)."""
    return name == OWNER or OWNER in inherited(await role_graph(session, org), name)


async def check_inheritance(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    child: str,
    parents: list[str],
    field: str,
    *,
    adding: bool = False,
) -> None:
    """Parents must exist, must not be superadmin, must not make a cycle; inheriting owner needs owner rights.
    `parents` replace the child's current ones, or with `adding` join them (a single new `g` line)."""
    graph = await role_graph(session, org)
    graph[child] = (graph.get(child, set()) if adding else set()) | set(parents)
    for index, parent in enumerate(parents):
        await require_role(session, org, parent, f"{field}[{index}]")
        if parent == child or child in inherited(graph, parent):
            raise Unprocessable(f"{field}[{index}]: {parent!r} inherits {child!r}: roles cannot inherit in a cycle")
    if OWNER in inherited(graph, child):
        actor.require(owners_object(org), "POST", "only owners may create roles that inherit owner")


OWNER_ACTIONS = ("owners", "transfer", "archive", "restore")
"""Management objects under an org that stay with owners (and the platform): a delegated role never reaches them."""


def check_delegation(org: Organization, index: int, pattern: str, methods: list[str]) -> None:
    """A custom role may grant management actions inside its own org (an auditor reading members and audit, a
    key manager), as `admin:/orgs/<org>/...` patterns; never another org's, a platform object, or an owner's
    power, whatever the wildcard."""
    own = f"{rules.ADMIN_OBJECT}/orgs/{org.slug}"
    if pattern == "*" or (pattern != own and not pattern.startswith(own + "/")):
        raise Unprocessable(f"permissions[{index}].path: management objects a role grants start with {own}/")
    for action in OWNER_ACTIONS:
        if key_match2_regex(pattern).match(f"{own}/{action}") and ({"POST", "*"} & set(methods)):
            raise Unprocessable(f"permissions[{index}].path: {own}/{action} stays with owners")


def _lines(org: Organization, name: str, permissions: list[Permission], inherits: list[str]) -> list[Rule]:
    out: list[Rule] = []
    for index, permission in enumerate(permissions):
        if not permission.methods:
            raise Unprocessable(f"permissions[{index}].methods: name at least one method (or '*')")
        if rules.is_admin_pattern(permission.path):
            check_delegation(org, index, permission.path, [method.upper() for method in permission.methods])
        for method in permission.methods:
            try:
                out.append(rules.validate("p", (name, org.slug, permission.path, method, permission.effect)))
            except rules.PolicyError as exc:
                raise Unprocessable(f"permissions[{index}]: {exc}") from None
    out.extend(Rule("g", (name, parent, org.slug)) for parent in inherits)
    return out


async def _view(session: AsyncSession, org: Organization, name: str, role: Role | None) -> RoleView:
    domains = (org.slug,) if role is not None else (org.slug, ANY_DOMAIN)
    p_rows = await session.execute(
        select(PolicyRule.v2, PolicyRule.v3, PolicyRule.v4)
        .where(PolicyRule.ptype == "p", PolicyRule.v0 == name, PolicyRule.v1.in_(domains))
        .order_by(PolicyRule.id)
    )
    grouped: dict[tuple[str, str], list[str]] = {}
    for path, method, effect in p_rows:
        grouped.setdefault((path, effect), []).append(method)
    parents = (await role_graph(session, org)).get(name, set())
    return RoleView(
        name=name,
        system=role is None,
        description=role.description if role else f"system role: {name}",
        permissions=tuple(Permission(path, tuple(methods), effect) for (path, effect), methods in grouped.items()),
        inherits=tuple(sorted(parents)),
        version=role.version if role else 0,
    )


async def get_role(session: AsyncSession, org: Organization, name: str) -> RoleView:
    if name in SYSTEM_ROLES:
        return await _view(session, org, name, None)
    role = await custom_role(session, org, name) if ROLE_RE.match(name) else None
    if role is None:
        raise NotFound(f"role: no role {name!r} in this organization")
    return await _view(session, org, name, role)


async def list_roles(session: AsyncSession, org: Organization, *, cursor: str | None, limit: int) -> Page[RoleView]:
    """System roles first, then custom roles by name (names are the cursor)."""
    check_limit(limit)
    custom = list(await session.scalars(select(Role.name).where(Role.org_id == org.id).order_by(Role.name)))
    names = [*SYSTEM_ROLES, *custom]
    start = 0
    if cursor is not None:
        after = decode_cursor(cursor)
        if after not in names:
            raise Unprocessable("cursor: not a cursor this API returned")
        start = names.index(str(after)) + 1
    chosen = names[start : start + limit]
    items = [await get_role(session, org, name) for name in chosen]
    more = start + limit < len(names)
    return Page(items, encode_cursor(chosen[-1]) if more and chosen else None)


async def create_role(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    *,
    name: str,
    description: str,
    permissions: list[Permission],
    inherits: list[str],
) -> RoleView:
    if not ROLE_RE.match(name):
        raise Unprocessable("name: 1-64 characters: a-z first, then a-z, 0-9, '_' or '-'")
    if name in (*SYSTEM_ROLES, SUPERADMIN):
        raise Unprocessable(f"name: {name!r} is a system role")
    if len(description) > 500:
        raise Unprocessable("description: at most 500 characters")
    lines = _lines(org, name, permissions, inherits)
    await lock_org(session, org)
    await check_inheritance(session, actor, org, name, inherits, "inherits")
    role = Role(org_id=org.id, name=name, description=description, created_at=utcnow(), version=1)
    session.add(role)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"name: the role {name!r} already exists") from exc
    async with versions.tracked(session, actor, [org], "role.create"), owners_guarded(session, actor, org):
        await store.add_rules(session, lines, origin="api")
    await bump_version(session, changes.NOTHING)  # add_rules said what it added
    view = await _view(session, org, name, role)
    record(session, actor, "role.create", org=org.slug, target=name, after=_audit(view))
    return view


async def replace_role(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    name: str,
    *,
    description: str,
    permissions: list[Permission],
    inherits: list[str],
    if_match: int | None,
) -> RoleView:
    """Replace a custom role's description, permissions and parents in one step."""
    if name in SYSTEM_ROLES:
        raise Conflict(f"role: {name!r} is a system role; change it in the policy files")
    if len(description) > 500:
        raise Unprocessable("description: at most 500 characters")
    lines = _lines(org, name, permissions, inherits)
    await lock_org(session, org)
    role = await custom_role(session, org, name)
    if role is None:
        raise NotFound(f"role: no role {name!r} in this organization")
    await session.refresh(role)
    check_if_match(role.version, if_match, f"role {name!r}")
    before = await _view(session, org, name, role)
    await check_inheritance(session, actor, org, name, inherits, "inherits")
    async with (
        versions.tracked(session, actor, [org], "role.update"),
        owners_guarded(session, actor, org),  # dropping an `owner` parent takes owner from its holders
    ):
        await _drop_lines(session, org, name)
        await store.add_rules(session, lines, origin="api")
    await session.execute(
        update(Role).where(Role.id == role.id).values(description=description, version=Role.version + 1)
    )
    await bump_version(session, changes.NOTHING)  # the lines' changes were said as they were made
    await session.refresh(role)
    after = await _view(session, org, name, role)
    record(session, actor, "role.update", org=org.slug, target=name, before=_audit(before), after=_audit(after))
    return after


async def _drop_lines(session: AsyncSession, org: Organization, name: str) -> None:
    await store.delete_lines(
        session,
        (PolicyRule.v0 == name)
        & (
            ((PolicyRule.ptype == "p") & (PolicyRule.v1 == org.slug))
            | ((PolicyRule.ptype == "g") & (PolicyRule.v2 == org.slug))
        ),
    )


async def delete_role(
    session: AsyncSession, actor: Actor, org: Organization, name: str, *, move_to: str | None
) -> None:
    """Refused while members hold the role (unless `move_to` names their new role) or another role inherits it."""
    if name in SYSTEM_ROLES:
        raise Conflict(f"role: {name!r} is a system role and cannot be deleted")
    await lock_org(session, org)
    role = await custom_role(session, org, name)
    if role is None:
        raise NotFound(f"role: no role {name!r} in this organization")
    before = await _view(session, org, name, role)
    heirs = sorted(child for child, parents in (await role_graph(session, org)).items() if name in parents)
    if heirs:
        raise Conflict(f"role: {name!r} is inherited by {', '.join(heirs)}; change those roles first")
    holders = await session.scalar(
        select(func.count()).select_from(Membership).where(Membership.org_id == org.id, Membership.role == name)
    )
    if holders:
        if move_to is None:
            raise Conflict(f"role: {holders} member(s) hold {name!r}; pass move_to to give them another role")
        if move_to == name:
            raise Unprocessable("move_to: must name another role")
        await require_role(session, org, move_to, "move_to")
    async with versions.tracked(session, actor, [org], "role.delete"), owners_guarded(session, actor, org):
        if holders:
            await session.execute(
                update(Membership).where(Membership.org_id == org.id, Membership.role == name).values(role=move_to)
            )
        await _drop_lines(session, org, name)
    await session.delete(role)
    await bump_version(session)
    record(session, actor, "role.delete", org=org.slug, target=name, before=_audit(before), after={"moved_to": move_to})


def _audit(view: RoleView) -> dict[str, object]:
    return {
        "description": view.description,
        "permissions": [[p.path, list(p.methods), p.effect] for p in view.permissions],
        "inherits": list(view.inherits),
    }
