"""What every management service shares: the acting caller, audit events, org locks, keyset pagination."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from gateway.db import changes
from gateway.db.audit import AUDIT_RECORDED as AUDIT_RECORDED
from gateway.db.audit import write_event
from gateway.db.engine import bump_version
from gateway.db.models import Organization
from gateway.errors import Forbidden, NotFound, PreconditionFailed, Unprocessable

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_EXPIRY_DAYS = 3650
"""The longest an API key may live (ten years); an org may set a shorter `max_key_days`."""


def _allow_all(obj: str, method: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a change: `user:<id>` (admin API) or `cli:<os user>` (command line)."""

    subject: str
    request_id: str | None = None
    may: Callable[[str, str], bool] = field(default=_allow_all)
    """The enforcer's answer for another (admin object, method): for checks that depend on the body, such as
    granting `owner`. The CLI is the operator and may everything."""

    def require(self, obj: str, method: str, what: str) -> None:
        if not self.may(obj, method):
            raise Forbidden(what)


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    org: str | None,
    target: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Add the audit event to the caller's transaction: it commits or rolls back with the change."""
    write_event(
        session,
        actor.subject,
        action,
        org=org,
        target=target,
        before=before,
        after=after,
        request_id=actor.request_id,
    )


async def find_org(session: AsyncSession, slug: str) -> Organization:
    """The org with this slug, archived or not; 404 otherwise."""
    org = await session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise NotFound(f"org: no organization {slug!r}")
    return org


async def lock_org(session: AsyncSession, org: Organization) -> None:
    """Serialise changes to one org's members and roles until the transaction ends, so checks such as "not the
    last owner" cannot race. PostgreSQL locks the org's row; SQLite's first write takes the database lock, and
    every change bumps the state version anyway, so that write comes first."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(Organization.id).where(Organization.id == org.id).with_for_update())
    else:
        await bump_version(session, changes.NOTHING)  # a lock: the change itself bumps again, saying what


def check_if_match(current: int, if_match: int | None, what: str) -> None:
    """Optimistic concurrency: a write naming the version it read fails if someone else wrote since."""
    if if_match is not None and if_match != current:
        raise PreconditionFailed(f"{what} changed since version {if_match} (now {current}); read it again")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list in a stable order; pass `next_cursor` back to get the next page."""

    items: list[T]
    next_cursor: str | None


async def every_page(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> list[T]:
    """Every item of a list, page after page (`fetch(cursor)` returns one page; the CLI prints whole lists)."""
    items: list[T] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        if (cursor := page.next_cursor) is None:
            return items


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (value,) = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise Unprocessable("cursor: not a cursor this API returned", field="cursor") from None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise Unprocessable("cursor: not a cursor this API returned", field="cursor")
    # What this API returns: an id within the store's 32-bit range, or a short printable string.
    if isinstance(value, int) and not -(2**31) <= value < 2**31:
        raise Unprocessable("cursor: not a cursor this API returned", field="cursor")
    if isinstance(value, str) and (len(value) > 255 or not value.isprintable()):
        raise Unprocessable("cursor: not a cursor this API returned", field="cursor")
    return value


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Unprocessable(f"limit: between 1 and {MAX_LIMIT}", field="limit")
    return limit


async def fetch_page(
    session: AsyncSession,
    query: Select[T],
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    key_of: Callable[[T], str | int],
    descending: bool = False,
) -> Page[T]:
    """Keyset pagination on one unique column: no row is skipped or repeated when rows are added meanwhile."""
    check_limit(limit)
    if cursor is not None:
        after = decode_cursor(cursor)
        query = query.where(key < after if descending else key > after)
    query = query.order_by(key.desc() if descending else key).limit(limit + 1)
    rows: Sequence[T] = (await session.scalars(query)).all()
    items = list(rows[:limit])
    return Page(items, encode_cursor(key_of(items[-1])) if len(rows) > limit else None)
