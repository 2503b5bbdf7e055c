"""Claims to memberships: a provider's `[[identity_providers.memberships]]` rules, applied at every sign-in.

A rule matches when the person's claim equals its value or lists it (GitHub: `orgs` and `teams`, compared without
case). For each org, the first matching rule in the file gives the role. Then:
- not a member: added with that role, marked as the mapping's (`memberships.granted_by = provider:<name>`);
- a member through this mapping with another role: the role follows the rule;
- a member through this mapping whom no rule matches any more: removed (their API keys in the org stop, as any
  removal does);
- a member made by an admin, an invitation or the CLI, or whose role an admin changed since: never touched.
An org that does not exist, takes members by invitation only, is full, or would lose its last owner is skipped
and logged; the sign-in goes on. Every change is audited as the admin API's are, with the actor
`provider:<name>`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Membership, Organization, User
from gateway.errors import GatewayError
from gateway.manage import members
from gateway.manage.common import Actor
from gateway.settings import IdentityProvider, ProviderMembership

log = logging.getLogger("gateway.federation")


def _matches(rule: ProviderMembership, claims: Mapping[str, Any], *, fold: bool) -> bool:
    value = claims.get(rule.claim)
    wanted = rule.value.lower() if fold else rule.value
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or item is None:
            continue
        text = str(item).lower() if fold else str(item)
        if text == wanted:
            return True
    return False


def desired(provider: IdentityProvider, claims: Mapping[str, Any]) -> dict[str, str]:
    """org slug -> role the rules give this person (the first matching rule per org)."""
    roles: dict[str, str] = {}
    for rule in provider.memberships:
        if rule.org not in roles and _matches(rule, claims, fold=provider.kind == "github"):
            roles[rule.org] = rule.role
    return roles


async def apply(db: AsyncSession, provider: IdentityProvider, user: User, claims: Mapping[str, Any]) -> None:
    """Bring the user's mapped memberships in line with `claims` (see the module docstring)."""
    if not provider.memberships:
        return
    marker = f"provider:{provider.name}"
    actor = Actor(subject=marker)
    wanted = desired(provider, claims)
    rows = await db.execute(
        select(Membership, Organization)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user.id)
    )
    current = {org.slug: (membership, org) for membership, org in rows.all()}
    for slug, role in wanted.items():
        if slug in current:
            membership, org = current[slug]
            if membership.granted_by != marker or membership.role == role:
                continue
            await _attempt(db, slug, role, lambda o=org, r=role: _change(db, actor, o, user, r, marker))
            continue
        org_row = await db.scalar(select(Organization).where(Organization.slug == slug))
        if org_row is None or org_row.archived_at is not None:
            log.warning("%s: membership rule names org %r, which does not exist or is archived", marker, slug)
            continue
        await _attempt(db, slug, role, lambda o=org_row, r=role: _add(db, actor, o, user, r, marker))
    for slug, (membership, org) in current.items():
        if membership.granted_by == marker and slug not in wanted:
            await _attempt(db, slug, "", lambda o=org: members.remove_member(db, actor, o, user.id))


async def _attempt(db: AsyncSession, slug: str, role: str, change: Any) -> None:
    try:
        async with db.begin_nested():
            await change()
    except GatewayError as exc:
        log.warning("membership mapping skipped for org %r (role %r): %s", slug, role, exc.detail)


async def _add(db: AsyncSession, actor: Actor, org: Organization, user: User, role: str, marker: str) -> None:
    await members.add_member(db, actor, org, role=role, user_id=user.id)
    membership = await db.get(Membership, (user.id, org.id))
    assert membership is not None
    membership.granted_by = marker


async def _change(db: AsyncSession, actor: Actor, org: Organization, user: User, role: str, marker: str) -> None:
    await members.change_role(db, actor, org, user.id, role)
    membership = await db.get(Membership, (user.id, org.id))
    assert membership is not None
    membership.granted_by = marker  # change_role clears it for admins; the mapping keeps its own
