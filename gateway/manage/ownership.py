"""Who owns an org, computed from the role graph, and the one guard every change that could move it goes through.

A member holds `owner` when their role is `owner` or inherits it through any chain of roles (`g` lines between
roles, in the org or everywhere), or when a `g, user:<id>, <role>, <org or *>` line gives them such a role.
Every write that touches memberships, roles or `g` lines runs inside `owners_guarded`: the holders are computed
before and after the change (in the same transaction), and

- a change to who holds `owner` needs owner rights (the enforcer is asked about `admin:/orgs/<org>/owners`);
- a service account never holds `owner`, by any path;
- the org never loses its last human owner.

So a custom role edited to stop (or start) inheriting `owner`, a role deleted with its members moved elsewhere, or
a `g` line removed or added, are held to the same rules as changing a member's role directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Membership, Organization, PolicyRule, User
from gateway.errors import Conflict, Unprocessable
from gateway.manage.common import Actor
from gateway.policy import rules
from gateway.policy.rules import ANY_DOMAIN, inherited

OWNER = "owner"


def owners_object(org: Organization) -> str:
    """The admin object the enforcer is asked about before anyone changes who holds `owner`."""
    return f"{rules.ADMIN_OBJECT}/orgs/{org.slug}/owners"


async def role_graph(session: AsyncSession, org: Organization) -> dict[str, set[str]]:
    """role -> roles it inherits directly, from `g` lines between roles in this org or everywhere."""
    rows = await session.execute(
        select(PolicyRule.v0, PolicyRule.v1).where(PolicyRule.ptype == "g", PolicyRule.v2.in_((org.slug, ANY_DOMAIN)))
    )
    parents: dict[str, set[str]] = {}
    for child, parent in rows:
        if not child.startswith("user:"):
            parents.setdefault(child, set()).add(parent)
    return parents


def owning_roles(parents: dict[str, set[str]]) -> set[str]:
    """The roles whose holders hold `owner`."""
    return {OWNER} | {role for role in parents if OWNER in inherited(parents, role)}


async def owner_holders(session: AsyncSession, org: Organization) -> dict[str, str]:
    """user id -> kind (`human`, `service`) of everyone holding `owner` in `org`, by membership or `g` line."""
    owning = owning_roles(await role_graph(session, org))
    members = await session.execute(
        select(User.id, User.kind)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org.id, Membership.role.in_(owning), User.disabled.is_(False))
    )
    holders = {user_id: kind for user_id, kind in members}
    grants = await session.execute(
        select(PolicyRule.v0).where(
            PolicyRule.ptype == "g", PolicyRule.v1.in_(owning), PolicyRule.v2.in_((org.slug, ANY_DOMAIN))
        )
    )
    granted = [subject.removeprefix("user:") for (subject,) in grants if subject.startswith("user:")]
    if granted:
        kinds = await session.execute(select(User.id, User.kind).where(User.id.in_(granted)))
        holders.update({user_id: kind for user_id, kind in kinds})
    return holders


@asynccontextmanager
async def owners_guarded(session: AsyncSession, actor: Actor, org: Organization) -> AsyncIterator[None]:
    """Run a change to memberships, roles or `g` lines of `org` (the caller holds the org's row lock); on the
    way out, refuse it (the transaction is not committed) if it breaks one of the module's rules."""
    before = await owner_holders(session, org)
    yield
    await session.flush()
    after = await owner_holders(session, org)
    if any(kind == "service" for kind in after.values()):
        raise Unprocessable("role: a service account cannot hold owner, directly or through a role")
    if set(after) != set(before):
        actor.require(owners_object(org), "POST", "only owners may change who holds owner, even through a role")
    humans_before = [user for user, kind in before.items() if kind == "human"]
    if humans_before and not any(kind == "human" for kind in after.values()):
        raise Conflict("role: the organization would lose its last owner; make someone else owner first")
