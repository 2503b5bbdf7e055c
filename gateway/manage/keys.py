"""API keys and service accounts: credentials that act as one member of one org, shown once, stored hashed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import changes
from gateway.db.engine import bump_version
from gateway.db.models import ApiKey, Membership, Organization, User, new_id, utcnow
from gateway.errors import Conflict, Forbidden, NotFound, Unprocessable
from gateway.identity import apikeys
from gateway.manage.common import MAX_EXPIRY_DAYS, Actor, Page, fetch_page, lock_org, record
from gateway.manage.members import MemberView, _is_uuid
from gateway.manage.orgs import check_room_for_member
from gateway.manage.roles import implies_owner, require_role
from gateway.policy import KeyRecord, rules
from gateway.policy.hot import Network
from gateway.policy.lint import pattern_covers
from gateway.policy.store import parse_scopes


@dataclass(frozen=True, slots=True)
class KeyView:
    """What a listing shows: never the key, only its id and last four characters."""

    id: str
    name: str
    user_id: str
    prefix: str
    last4: str
    scopes: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    """Addresses and networks the key is accepted from; empty: from anywhere."""
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def key_view(row: ApiKey) -> KeyView:
    return KeyView(
        id=row.id,
        name=row.name,
        user_id=row.user_id,
        prefix=f"{apikeys.PREFIX}{row.id}_",
        last4=row.last4,
        scopes=tuple(f"{method} {pattern}" for method, pattern in parse_scopes(row.scopes)),
        allowed_ips=tuple(json.loads(row.allowed_ips)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def validate_scopes(scopes: list[str], org: Organization | None = None) -> list[str]:
    """Each scope is "METHOD /pattern" (METHOD may be *), with the same pattern rules as proxied policy lines,
    or "METHOD admin:/orgs/<this org>/..." for a management action the key may take (creating keys needs one,
    see `check_key_from_key`)."""
    checked = []
    own = f"{rules.ADMIN_OBJECT}/orgs/{org.slug}/" if org is not None else None
    for index, scope in enumerate(scopes):
        method, _, pattern = scope.strip().partition(" ")
        pattern = pattern.strip()
        if rules.is_admin_pattern(pattern) and (own is None or not pattern.startswith(own)):
            raise Unprocessable(f"scopes[{index}]: scopes name proxied paths ('/...') or this org's {own}...")
        try:
            rules.validate("p", ("viewer", "*", pattern, method.strip()))
        except rules.PolicyError as exc:
            raise Unprocessable(f"scopes[{index}]: {exc}") from None
        checked.append(f"{method.strip()} {pattern}")
    return checked


MAX_ALLOWED_IPS = 100


def validate_allowed_ips(entries: list[str]) -> list[str]:
    """Each entry an IPv4 or IPv6 address (`203.0.113.7`) or network (`203.0.113.0/24`, `2001:db8::/32`), in its
    normal form (lower case, shortest IPv6 spelling, an address without `/32` or `/128`); duplicates dropped, at
    most MAX_ALLOWED_IPS. A network with host bits set (`10.0.0.5/8`) is refused: which one was meant is unclear."""
    if len(entries) > MAX_ALLOWED_IPS:
        raise Unprocessable(f"allowed_ips: at most {MAX_ALLOWED_IPS} entries")
    checked: dict[str, None] = {}
    for index, entry in enumerate(entries):
        text = entry.strip()
        if "%" in text:
            raise Unprocessable(f"allowed_ips[{index}]: a zone id (%...) has no meaning in an allow-list")
        try:
            network = ipaddress.ip_network(text)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise Unprocessable(f"allowed_ips[{index}]: not an IPv4 or IPv6 address or network") from None
            raise Unprocessable(f"allowed_ips[{index}]: host bits set (the network is {loose})") from None
        single = network.prefixlen == network.max_prefixlen
        checked[str(network.network_address) if single else str(network)] = None
    return list(checked)


def key_creation_object(org: Organization) -> str:
    """The management object of creating one's own keys in `org` (`POST` it needs an explicit scope)."""
    return f"{rules.ADMIN_OBJECT}/orgs/{org.slug}/members/me/keys"


def check_key_from_key(
    creator: KeyRecord,
    org: Organization,
    obj: str,
    *,
    scopes: list[str],
    expires_in_days: int | None,
    allowed_ips: list[str] | None = None,
) -> None:
    """A key creating a key (at the management object `obj`): only with a scope that explicitly allows POST on
    it (a key without scopes may not), and never a key that outlives, out-scopes or out-reaches its creator:
    each new scope within one of the creator's, its expiry no later, and, when the creator has an allow-list,
    one of its own within it."""
    if not creator.scopes or not creator.permits("POST", obj):
        raise Forbidden(f"an API key creates keys only with a scope that allows it: 'POST {obj}'")
    if not scopes:
        raise Unprocessable("scopes: a key made by a key is scoped within its creator's scopes")
    for index, scope in enumerate(validate_scopes(scopes, org)):
        method, pattern = scope.split(" ", 1)
        if not any(
            wide_method in (method, "*") and pattern_covers(wide, pattern) for wide_method, wide in creator.scopes
        ):
            raise Unprocessable(f"scopes[{index}]: wider than the scopes of the key creating it")
    if creator.allowed is not None:
        entries = allowed_ips or []
        if not entries:
            raise Unprocessable("allowed_ips: the key creating it has an allow-list; give one within it")
        validate_allowed_ips(entries)
        for index, entry in enumerate(entries):
            network = ipaddress.ip_network(entry.strip())
            if not any(_inside(network, wider) for wider in creator.allowed.networks):
                raise Unprocessable(f"allowed_ips[{index}]: outside the allow-list of the key creating it")
    if creator.expires_at is not None:
        days = int((creator.expires_at - time.time()) // 86400)
        if days < 1:
            raise Unprocessable("expires_in_days: the key creating it expires within a day")
        if expires_in_days is None or expires_in_days > days:
            raise Unprocessable(f"expires_in_days: at most {days} (the key creating it expires then)")


def _inside(network: Network, wider: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(wider, ipaddress.IPv4Network):
        return network.subnet_of(wider)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(wider, ipaddress.IPv6Network):
        return network.subnet_of(wider)
    return False


def _live(row: ApiKey, org: Organization) -> changes.Op:
    """The change log's record of a key that works (the hot path holds it while its owner is a member)."""
    return changes.key_live(
        row.id,
        key_hash=row.key_hash,
        user_id=row.user_id,
        org=org.slug,
        scopes=row.scopes,
        expires_at=row.expires_at,
        allowed_ips=row.allowed_ips,
    )


async def create_key(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    user: User,
    *,
    name: str,
    expires_in_days: int | None = None,
    scopes: list[str] | None = None,
    allowed_ips: list[str] | None = None,
) -> tuple[str, KeyView]:
    """A key acting as `user` in `org`, accepted only from `allowed_ips` (if any); returns the key (shown only
    now) and its listing."""
    if not name.strip() or len(name) > 100:
        raise Unprocessable("name: 1-100 characters")
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise Unprocessable(f"expires_in_days: between 1 and {MAX_EXPIRY_DAYS}")
    if org.max_key_days is not None and (expires_in_days is None or expires_in_days > org.max_key_days):
        raise Unprocessable(f"expires_in_days: this organization's keys live at most {org.max_key_days} days")
    checked = validate_scopes(scopes or [], org)
    networks = validate_allowed_ips(allowed_ips or [])
    if await session.get(Membership, (user.id, org.id)) is None:
        raise Unprocessable("user: not a member of this organization")
    await _check_room_for_key(session, org)
    key, key_id = apikeys.new_key()
    now = utcnow()
    row = ApiKey(
        id=key_id,
        org_id=org.id,
        user_id=user.id,
        name=name.strip(),
        key_hash=apikeys.key_hash(key),
        last4=key[-4:],
        scopes=json.dumps(checked),
        allowed_ips=json.dumps(networks),
        created_at=now,
        expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(row)
    await session.flush()
    await bump_version(session, [_live(row, org)])
    view = key_view(row)
    after: dict[str, object] = {"user": user.id, "name": row.name}
    if networks:
        after["allowed_ips"] = networks
    record(session, actor, "key.create", org=org.slug, target=key_id, after=after)
    return key, view


MAX_GRACE_SECONDS = 7 * 86400


async def rotate_key(
    session: AsyncSession, actor: Actor, org: Organization, key_id: str, *, user_id: str, grace_seconds: int
) -> tuple[str, KeyView, KeyView]:
    """A new secret for a key in one step: a new key with the same name, owner, scopes, allow-list and expiry,
    and the old one kept valid for `grace_seconds` more (0: it stops now), so clients can switch without an
    outage. Returns the new key (shown only now), its listing and the old key's."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise Unprocessable(f"grace_seconds: between 0 and {MAX_GRACE_SECONDS}")
    old = await session.get(ApiKey, key_id, with_for_update=True)
    if old is None or old.org_id != org.id or old.user_id != user_id:
        raise NotFound("key: no such API key")
    now = utcnow()
    expires = old.expires_at
    if old.revoked_at is not None or (expires is not None and expires <= now):
        raise Conflict("key: revoked or expired; create a new one")
    key, fresh_id = apikeys.new_key()
    fresh = ApiKey(
        id=fresh_id,
        org_id=org.id,
        user_id=old.user_id,
        name=old.name,
        key_hash=apikeys.key_hash(key),
        last4=key[-4:],
        scopes=old.scopes,
        allowed_ips=old.allowed_ips,
        created_at=now,
        expires_at=old.expires_at,
    )
    session.add(fresh)
    ending = now + dt.timedelta(seconds=grace_seconds)
    if grace_seconds == 0:
        old.revoked_at = now
    elif expires is None or ending < expires:
        old.expires_at = ending
    await session.flush()
    ending_old = changes.key_stopped(old.id) if grace_seconds == 0 else _live(old, org)
    await bump_version(session, [_live(fresh, org), ending_old])
    record(
        session,
        actor,
        "key.rotate",
        org=org.slug,
        target=key_id,
        after={"user": old.user_id, "new_key": fresh_id, "old_valid_until": ending.isoformat()},
    )
    return key, key_view(fresh), key_view(old)


async def _check_room_for_key(session: AsyncSession, org: Organization) -> None:
    """409 when the org already has `max_keys` live (not revoked, not expired) keys."""
    if org.max_keys is None:
        return
    live = await session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.org_id == org.id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()),
        )
    )
    if int(live or 0) >= org.max_keys:
        raise Conflict(f"org: at its limit of {org.max_keys} live API keys; revoke one first")


async def list_keys(
    session: AsyncSession, org: Organization, *, user_id: str | None = None, cursor: str | None, limit: int
) -> Page[KeyView]:
    query = select(ApiKey).where(ApiKey.org_id == org.id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    page = await fetch_page(session, query, ApiKey.id, cursor=cursor, limit=limit, key_of=lambda k: k.id)
    return Page([key_view(row) for row in page.items], page.next_cursor)


async def revoke_key(
    session: AsyncSession, actor: Actor, org: Organization, key_id: str, *, user_id: str | None = None
) -> KeyView:
    """Revoked keys leave every gateway's snapshot on the next reload. Another org's key, or (with `user_id`)
    another user's key, is not found."""
    row = await session.get(ApiKey, key_id)
    if row is None or row.org_id != org.id or (user_id is not None and row.user_id != user_id):
        raise NotFound("key: no such API key")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
        await bump_version(session, [changes.key_stopped(row.id)])
        record(session, actor, "key.revoke", org=org.slug, target=key_id, before={"user": row.user_id})
    return key_view(row)


async def set_allowed_ips(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    key_id: str,
    allowed_ips: list[str],
    *,
    user_id: str | None = None,
) -> KeyView:
    """Replace a key's allow-list (empty: from anywhere). Like revocation, it reaches every gateway's snapshot on
    the next reload; another org's key, or (with `user_id`) another user's key, is not found, and a revoked key is
    409 (nothing left to restrict)."""
    networks = validate_allowed_ips(allowed_ips)
    row = await session.get(ApiKey, key_id, with_for_update=True)
    if row is None or row.org_id != org.id or (user_id is not None and row.user_id != user_id):
        raise NotFound("key: no such API key")
    if row.revoked_at is not None:
        raise Conflict("key: revoked")
    before = json.loads(row.allowed_ips)
    if before != networks:
        row.allowed_ips = json.dumps(networks)
        await session.flush()
        await bump_version(session, [_live(row, org)])
        record(
            session,
            actor,
            "key.update",
            org=org.slug,
            target=key_id,
            before={"user": row.user_id, "allowed_ips": before},
            after={"user": row.user_id, "allowed_ips": networks},
        )
    return key_view(row)


async def org_of_key(session: AsyncSession, key_id: str) -> Organization:
    """The org a key belongs to (for the CLI, which names keys by id alone)."""
    row = await session.get(ApiKey, key_id)
    org = await session.get(Organization, row.org_id) if row is not None else None
    if org is None:
        raise NotFound("key: no such API key")
    return org


# -- service accounts -----------------------------------------------------------------------------------------


async def create_service_account(
    session: AsyncSession, actor: Actor, org: Organization, *, name: str, role: str
) -> MemberView:
    """A non-human member of this org: no email, no password; it authenticates with its API keys only."""
    if not name.strip() or len(name) > 200:
        raise Unprocessable("name: 1-200 characters")
    await lock_org(session, org)
    await require_role(session, org, role)
    if await implies_owner(session, org, role):
        raise Unprocessable("role: a service account cannot own an organization")
    await check_room_for_member(session, org)
    now = utcnow()
    user = User(id=new_id(), email=None, password_hash=None, kind="service", name=name.strip(), org_id=org.id)
    user.created_at = now
    session.add(user)
    await session.flush()
    membership = Membership(user_id=user.id, org_id=org.id, role=role, created_at=now)
    session.add(membership)
    await session.flush()
    await bump_version(session, [changes.membership(user.id, org.slug, old=None, new=role)])
    record(session, actor, "service_account.create", org=org.slug, target=user.id, after={"name": name, "role": role})
    return MemberView(user.id, None, user.name, user.kind, role, now)


async def service_account(session: AsyncSession, org: Organization, account_id: str) -> User:
    user = await session.get(User, account_id) if _is_uuid(account_id) else None
    if user is None or user.kind != "service" or user.org_id != org.id:
        raise NotFound("service account: no such service account in this organization")
    return user


async def list_service_accounts(
    session: AsyncSession, org: Organization, *, cursor: str | None, limit: int
) -> Page[MemberView]:
    page = await fetch_page(
        session,
        select(User).where(User.kind == "service", User.org_id == org.id),
        User.id,
        cursor=cursor,
        limit=limit,
        key_of=lambda u: u.id,
    )
    roles = dict(
        (await session.execute(select(Membership.user_id, Membership.role).where(Membership.org_id == org.id))).all()
    )
    return Page(
        [MemberView(u.id, None, u.name, u.kind, roles.get(u.id, ""), u.created_at) for u in page.items],
        page.next_cursor,
    )


async def delete_service_account(session: AsyncSession, actor: Actor, org: Organization, account_id: str) -> None:
    """Deletes the account with its membership and keys (its keys stop working on the next reload)."""
    user = await service_account(session, org, account_id)
    await session.delete(user)
    await session.flush()
    await bump_version(session)
    record(session, actor, "service_account.delete", org=org.slug, target=account_id, before={"name": user.name})
