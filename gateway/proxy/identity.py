"""What an upstream is told about the caller: the configured X-Gateway-* identity headers, and the user
directory that email and name come from.

`identity_headers` (top level, per route, and `[forward_auth]`) picks from `user` (X-Gateway-User, the user
id), `email`, `name`, `org` and `roles`; the default is user, org and roles. Email and name are what the user
wrote, so they are percent-encoded UTF-8 (RFC 3986: everything but letters, digits and `-._~@+!$&'()*,;=:/`
is `%XX`, `%` itself included): no CR, LF or other control character, no byte outside ASCII ever reaches a
header, and `urllib.parse.unquote` gives the value back. A user without an email gets an empty X-Gateway-Email.

Email and name are not in the policy snapshot (most deployments never send them, and every user in the
snapshot would cost memory on every replica for nothing): a `Directory` looks a user up once and keeps the
answer in memory for `DIRECTORY_TTL_SECONDS`, so in steady state a request costs no database query, and a
renamed user is seen within that time. It is built only when a configured header needs it, holds at most
`DIRECTORY_MAX` users (those who call), and concurrent first requests of one user share one query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import User
from gateway.settings import DEFAULT_IDENTITY_HEADERS

HEADER_NAMES = {
    "user": "x-gateway-user",
    "email": "x-gateway-email",
    "name": "x-gateway-name",
    "org": "x-gateway-org",
    "roles": "x-gateway-roles",
}
DIRECTORY_TTL_SECONDS = 60.0
DIRECTORY_MAX = 100_000
_SAFE = "@+!$&'()*,;=:/"


def header_safe(value: str) -> str:
    """A user-written value as a header value (see the module docstring)."""
    return quote(value, safe=_SAFE)


def needs_directory(wanted: Iterable[str]) -> bool:
    return any(kind in ("email", "name") for kind in wanted)


class Directory:
    """User id -> (email, name), from the database once per user per `DIRECTORY_TTL_SECONDS`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float = DIRECTORY_TTL_SECONDS) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._known: dict[str, tuple[float, str, str]] = {}
        self._pending: dict[str, asyncio.Future[tuple[str, str]]] = {}

    async def lookup(self, user_id: str) -> tuple[str, str]:
        known = self._known.get(user_id)
        if known is not None and known[0] > time.monotonic():
            return known[1], known[2]
        pending = self._pending.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[user_id] = future
        try:
            async with self._sessions() as session:
                row = (await session.execute(select(User.email, User.name).where(User.id == user_id))).first()
            found = (row[0] or "", row[1] or "") if row is not None else ("", "")
            if len(self._known) >= DIRECTORY_MAX:
                del self._known[next(iter(self._known))]  # the oldest entry: bounded under a flood of users
            self._known[user_id] = (time.monotonic() + self._ttl, *found)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, and an unawaited future does not warn
            raise
        finally:
            del self._pending[user_id]


def identity_headers(
    wanted: tuple[str, ...],
    *,
    user_id: str,
    org: str,
    roles: str,
    person: tuple[str, str] | None = None,
) -> tuple[tuple[str, str], ...]:
    """The identity headers `wanted`, in the order configured; `person` is the user's (email, name) from the
    directory when `wanted` names either."""
    if wanted == DEFAULT_IDENTITY_HEADERS:  # the usual case, as cheap as before the headers were configurable
        return (("x-gateway-user", user_id), ("x-gateway-org", org), ("x-gateway-roles", roles))
    values = {"user": user_id, "org": org, "roles": roles}
    if person is not None:
        values["email"], values["name"] = header_safe(person[0]), header_safe(person[1])
    return tuple((HEADER_NAMES[kind], values.get(kind, "")) for kind in wanted)
