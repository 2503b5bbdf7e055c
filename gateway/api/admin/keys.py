"""API keys (the caller's own, any member's, the whole org's) and service accounts with their keys."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.common import DEFAULT_PAGE, Cursor, Limit
from gateway.api.admin.guard import Caller
from gateway.db.models import Organization, User
from gateway.errors import Forbidden
from gateway.identity.lifecycle import require_recent
from gateway.manage import keys
from gateway.manage.common import Page, find_org
from gateway.manage.members import get_member
from gateway.policy.rules import ADMIN_OBJECT

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def _page(page: Page[keys.KeyView]) -> schemas.KeyPage:
    return schemas.KeyPage(page.items, page.next_cursor)


def _member_id(caller: Caller, member: FromPath[str]) -> str:
    return caller.user_id if member == "me" else member


async def _create(
    db: AsyncSession, caller: Caller, org: Organization, user: User, data: schemas.KeyCreate, obj: str
) -> Response[schemas.KeyCreated]:
    """Create a key at the management object `obj` (what the caller POSTs to)."""
    creator = caller.principal.key
    if creator is None:
        require_recent(caller.principal)  # a new credential is a sensitive change: sign-in within 15 min
    else:
        keys.check_key_from_key(
            creator,
            org,
            obj,
            scopes=data.scopes or [],
            expires_in_days=data.expires_in_days,
            allowed_ips=data.allowed_ips,
        )
    key, view = await keys.create_key(
        db,
        caller.actor,
        org,
        user,
        name=data.name,
        expires_in_days=data.expires_in_days,
        scopes=data.scopes,
        allowed_ips=data.allowed_ips,
    )
    return Response(schemas.KeyCreated(key=key, details=view), status_code=201, headers=NO_STORE)


async def _rotate(
    db: AsyncSession, caller: Caller, org: Organization, key: str, user_id: str, data: schemas.KeyRotate
) -> Response[schemas.KeyRotated]:
    """A new secret is a new credential: a person signed in within 15 minutes asks for it, never a key."""
    if caller.principal.key is not None:
        raise Forbidden("rotate keys from a signed-in session, not with an API key")
    require_recent(caller.principal)
    secret, fresh, old = await keys.rotate_key(
        db, caller.actor, org, key, user_id=user_id, grace_seconds=data.grace_seconds
    )
    return Response(schemas.KeyRotated(key=secret, details=fresh, previous=old), status_code=201, headers=NO_STORE)


async def _update(
    db: AsyncSession, caller: Caller, org: Organization, key: str, user_id: str, data: schemas.KeyUpdate
) -> schemas.KeyView:
    """Where a key is accepted from belongs to the credential: changed, like a new one, by a person signed in
    within 15 minutes, never with a key (a stolen key would lift its own restriction)."""
    if caller.principal.key is not None:
        raise Forbidden("change a key's allowed_ips from a signed-in session, not with an API key")
    require_recent(caller.principal)
    return await keys.set_allowed_ips(db, caller.actor, org, key, data.allowed_ips, user_id=user_id)


class KeysController(Controller):
    """`members/me/keys` are the caller's own; `members/{id}/keys` and `keys` are for admins."""

    path = "/orgs/{org:str}"
    tags = ["api keys"]

    @get("/keys")
    async def list_org_keys(
        self, org: FromPath[str], db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.KeyPage:
        """Every key of the org, revoked ones included, ordered by key id."""
        return _page(await keys.list_keys(db, await find_org(db, org), cursor=cursor, limit=limit))

    @get("/members/{member:str}/keys")
    async def list_member_keys(
        self,
        org: FromPath[str],
        member: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.KeyPage:
        found = await find_org(db, org)
        user_id = (await get_member(db, found, _member_id(caller, member))).user_id
        return _page(await keys.list_keys(db, found, user_id=user_id, cursor=cursor, limit=limit))

    @post("/members/{member:str}/keys")
    async def create_member_key(
        self,
        org: FromPath[str],
        member: FromPath[str],
        data: JSONBody[schemas.KeyCreate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.KeyCreated]:
        """A key acting as the caller (`members/me/keys`). Nobody mints a key that acts as another person."""
        if _member_id(caller, member) != caller.user_id:
            raise Forbidden("a key acts as its creator: create it under members/me/keys")
        found = await find_org(db, org)
        user = await db.get(User, caller.user_id)
        if user is None:
            raise Forbidden("not allowed in this organization")
        return await _create(db, caller, found, user, data, keys.key_creation_object(found))

    @delete("/members/{member:str}/keys/{key:str}")
    async def revoke_member_key(
        self,
        org: FromPath[str],
        member: FromPath[str],
        key: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Revoke; another member's key id (or another org's) is 404."""
        found = await find_org(db, org)
        await keys.revoke_key(db, caller.actor, found, key, user_id=_member_id(caller, member))

    @patch("/members/{member:str}/keys/{key:str}")
    async def update_member_key(
        self,
        org: FromPath[str],
        member: FromPath[str],
        key: FromPath[str],
        data: JSONBody[schemas.KeyUpdate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.KeyView:
        """Replace a key's `allowed_ips`: its owner (`members/me/...`) or an admin, as for revoking it; takes
        effect at once."""
        found = await find_org(db, org)
        return await _update(db, caller, found, key, _member_id(caller, member), data)

    @post("/members/{member:str}/keys/{key:str}/rotate")
    async def rotate_own_key(
        self,
        org: FromPath[str],
        member: FromPath[str],
        key: FromPath[str],
        data: JSONBody[schemas.KeyRotate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.KeyRotated]:
        """One of the caller's keys (`members/me/...`) gets a new secret; the old one works for `grace_seconds`
        more. Nobody rotates another person's key (revoke it instead)."""
        if _member_id(caller, member) != caller.user_id:
            raise Forbidden("only the key's owner rotates it: members/me/keys/{key}/rotate")
        return await _rotate(db, caller, await find_org(db, org), key, caller.user_id, data)


class ServiceAccountsController(Controller):
    path = "/orgs/{org:str}/service-accounts"
    tags = ["service accounts"]

    @get("/")
    async def list_accounts(
        self, org: FromPath[str], db: NamedDependency[AsyncSession], cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
    ) -> schemas.MemberPage:
        page = await keys.list_service_accounts(db, await find_org(db, org), cursor=cursor, limit=limit)
        return schemas.MemberPage(page.items, page.next_cursor)

    @post("/")
    async def create(
        self,
        org: FromPath[str],
        data: JSONBody[schemas.ServiceAccountCreate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.MemberView:
        """A non-human member with a role (never owner); it authenticates with API keys only."""
        found = await find_org(db, org)
        return await keys.create_service_account(db, caller.actor, found, name=data.name, role=data.role)

    @delete("/{account:str}")
    async def remove(
        self,
        org: FromPath[str],
        account: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Delete the account, its membership and its keys."""
        await keys.delete_service_account(db, caller.actor, await find_org(db, org), account)

    @get("/{account:str}/keys")
    async def list_keys(
        self,
        org: FromPath[str],
        account: FromPath[str],
        db: NamedDependency[AsyncSession],
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> schemas.KeyPage:
        found = await find_org(db, org)
        user = await keys.service_account(db, found, account)
        return _page(await keys.list_keys(db, found, user_id=user.id, cursor=cursor, limit=limit))

    @post("/{account:str}/keys")
    async def create_key(
        self,
        org: FromPath[str],
        account: FromPath[str],
        data: JSONBody[schemas.KeyCreate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.KeyCreated]:
        found = await find_org(db, org)
        user = await keys.service_account(db, found, account)
        obj = f"{ADMIN_OBJECT}/orgs/{found.slug}/service-accounts/{account}/keys"
        return await _create(db, caller, found, user, data, obj)

    @post("/{account:str}/keys/{key:str}/rotate")
    async def rotate_key(
        self,
        org: FromPath[str],
        account: FromPath[str],
        key: FromPath[str],
        data: JSONBody[schemas.KeyRotate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> Response[schemas.KeyRotated]:
        """A service account's key gets a new secret; the old one works for `grace_seconds` more."""
        found = await find_org(db, org)
        user = await keys.service_account(db, found, account)
        return await _rotate(db, caller, found, key, user.id, data)

    @patch("/{account:str}/keys/{key:str}")
    async def update_key(
        self,
        org: FromPath[str],
        account: FromPath[str],
        key: FromPath[str],
        data: JSONBody[schemas.KeyUpdate],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> schemas.KeyView:
        """Replace a service account key's `allowed_ips`; takes effect at once."""
        found = await find_org(db, org)
        user = await keys.service_account(db, found, account)
        return await _update(db, caller, found, key, user.id, data)

    @delete("/{account:str}/keys/{key:str}")
    async def revoke_key(
        self,
        org: FromPath[str],
        account: FromPath[str],
        key: FromPath[str],
        caller: NamedDependency[Caller],
        db: NamedDependency[AsyncSession],
    ) -> None:
        found = await find_org(db, org)
        user = await keys.service_account(db, found, account)
        await keys.revoke_key(db, caller.actor, found, key, user_id=user.id)
