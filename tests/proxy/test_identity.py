"""The user directory behind X-Gateway-Email and -Name: one query per user per TTL, shared by concurrent
first requests, and header-safe values."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.models import User
from gateway.proxy.identity import Directory, header_safe, identity_headers
from tests.conftest import Gateway


def _counting(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return statements


async def test_the_directory_asks_once_per_user_and_forgets_after_its_ttl(gateway: Gateway) -> None:
    """Twenty concurrent first lookups of one user share one query; later ones within the TTL cost none; after
    the TTL a changed name is read again."""
    user_id = await gateway.user("d@acme.test")
    sessions = gateway.runtime.services.sessions
    engine = sessions.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    directory = Directory(sessions, ttl=0.5)
    statements = _counting(engine)
    answers = await asyncio.gather(*(directory.lookup(user_id) for _ in range(20)))
    assert set(answers) == {("d@acme.test", "")}
    assert await directory.lookup(user_id) == ("d@acme.test", "")
    assert len([s for s in statements if "FROM users" in s]) == 1
    async with sessions() as db:
        await db.execute(update(User).where(User.id == user_id).values(name="Dora"))
        await db.commit()
    await asyncio.sleep(0.6)
    assert await directory.lookup(user_id) == ("d@acme.test", "Dora")
    assert await directory.lookup("no-such-user") == ("", "")


def test_header_values_never_carry_control_characters_or_non_ascii() -> None:
    """Every value is printable ASCII with no CR/LF, and decodes back to what the user wrote."""
    for value in ("Zoë", "a\r\nb", "100% sure", "名前", "tab\there", "o'neil+x@example.com"):
        encoded = header_safe(value)
        assert encoded.isascii() and encoded.isprintable() and " " not in encoded
        assert unquote(encoded) == value
    assert header_safe("o'neil+x@example.com") == "o'neil+x@example.com"


def test_the_default_headers_and_a_chosen_order() -> None:
    """The default is user, org, roles; a configured list is sent in its own order, with nothing else."""
    default = identity_headers(("user", "org", "roles"), user_id="u", org="acme", roles="viewer")
    assert default == (("x-gateway-user", "u"), ("x-gateway-org", "acme"), ("x-gateway-roles", "viewer"))
    chosen = identity_headers(("name", "user"), user_id="u", org="acme", roles="", person=("e@x", "N é"))
    assert chosen == (("x-gateway-name", "N%20%C3%A9"), ("x-gateway-user", "u"))
