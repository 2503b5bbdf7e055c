"""/admin/orgs: create, list, read, rename, archive, restore."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, IfMatch, Limit, etag, if_match, org_view
from gateway.api.admin.guard import Caller, admin_object, allowed
from gateway.db.models import User
from gateway.errors import Conflict, Forbidden, InvalidToken
from gateway.manage import members, orgs
from gateway.manage.common import find_org
from gateway.policy import HotState
from gateway.policy.rules import ADMIN_OBJECT, ANY_DOMAIN
from gateway.settings import Settings


class OrgsController(Controller):
    path = "/orgs"
    tags = ["organizations"]

    @post("/", opt={"authz": "self-service"})
    async def create(
        self,
        data: JSONBody[schemas.OrgCreate],
        caller: NamedDependency[Caller],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.OrgView]:
        """Create an org; the caller becomes its owner. Takes a platform-wide grant (superadmin by default),
        or, with `[orgs] self_service`, any signed-in person owning fewer than `orgs.per_user` orgs."""
        owner = await db.get(User, caller.user_id)
        if owner is None or owner.disabled or owner.kind != "human":
            raise Forbidden("not allowed to create organizations")
        if not caller.actor.may(f"{ADMIN_OBJECT}/orgs", "POST"):
            owned = await orgs.owned_by(db, owner.id)
            if owned >= settings.orgs.per_user:
                raise Conflict(f"orgs: you own {owned} organizations, the most one person may create")
        org = await orgs.create_org(db, caller.actor, slug=data.slug, name=data.name, owner=owner)
        return Response(org_view(org), status_code=201, headers=etag(org.version))

    @get("/", opt={"authz": "self"})
    async def list_orgs(
        self,
        caller: NamedDependency[Caller],
        hot: NamedDependency[HotState],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.OrgPage:
        """The caller's orgs; every org (archived ones too) for whoever may `GET admin:/orgs` platform-wide."""
        user = await db.get(User, caller.user_id)
        if user is None or user.disabled:
            raise InvalidToken("token rejected")
        everything = allowed(hot, caller.principal, ANY_DOMAIN, admin_object("/admin/orgs", {}), "GET")
        page = await orgs.list_orgs(db, member_id=None if everything else caller.user_id, cursor=cursor, limit=limit)
        return schemas.OrgPage([org_view(org) for org in page.items], page.next_cursor)

    @get("/{org:str}")
    async def read(self, org: FromPath[str], db: NamedDependency[AsyncSession]) -> Response[schemas.OrgView]:
        found = await find_org(db, org)
        return Response(org_view(found), headers=etag(found.version))

    @patch("/{org:str}")
    async def update(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.OrgUpdate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        match: IfMatch = None,
    ) -> Response[schemas.OrgView]:
        """Change the name, description, billing address, limits, or whether members may be added directly
        (`direct_add`); the slug never changes. With If-Match, a stale version is refused with 412."""
        found = await find_org(db, org)
        updated = await orgs.update_org(
            db,
            caller.actor,
            found,
            if_match=if_match(match),
            name=data.name,
            description=data.description,
            billing_email=data.billing_email,
            limits={"max_members": data.max_members, "max_keys": data.max_keys, "max_key_days": data.max_key_days},
            direct_add=data.direct_add,
        )
        return Response(org_view(updated), headers=etag(updated.version))

    @post("/{org:str}/transfer", status_code=200)
    async def transfer(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.OwnershipTransfer],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.OwnershipTransferred:
        """Ownership transfer in one step: `to` becomes owner and the caller keeps `keep_as` (default admin)."""
        found = await find_org(db, org)
        owner, previous = await members.transfer_ownership(
            db, caller.actor, found, to=data.to, previous=caller.user_id, keep_as=data.keep_as
        )
        return schemas.OwnershipTransferred(owner=owner, previous=previous)

    @delete("/{org:str}", opt={"authz": "platform"}, status_code=200)
    async def delete_for_good(
        self,
        org: FromPath[str],
        caller: NamedDependency[Caller],
        settings: NamedDependency[Settings],
        db: NamedDependency[AsyncSession],
    ) -> dict[str, int]:
        """Delete an archived org for good, `orgs.delete_after_days` after it was archived (409 before): its
        members, custom roles, lines, keys and service accounts. Platform-wide permission. Returns the counts."""
        found = await find_org(db, org)
        return await orgs.delete_org(db, caller.actor, found, grace_days=settings.orgs.delete_after_days)

    @post("/{org:str}/archive", status_code=200)
    async def archive(
        self, org: FromPath[str], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.OrgView:
        """Soft delete: at once, every member and API key of the org is denied everywhere."""
        found = await find_org(db, org)
        return org_view(await orgs.set_archived(db, caller.actor, found, archived=True))

    @post("/{org:str}/restore", status_code=200)
    async def restore(
        self, org: FromPath[str], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.OrgView:
        """Undo an archive (an archived org has no members in effect, so this takes a platform-wide grant)."""
        found = await find_org(db, org)
        return org_view(await orgs.set_archived(db, caller.actor, found, archived=False))
