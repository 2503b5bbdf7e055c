"""Shared set-up for the /admin tests: one org with a member of each role, an outsider, a superadmin."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from tests.conftest import Gateway

ROLES = ("owner", "admin", "member", "viewer")


@dataclass
class World:
    gateway: Gateway
    tokens: dict[str, str]
    ids: dict[str, str]

    async def call(
        self, who: str | None, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, CIMultiDict[str]]:
        """Call the admin API as `who` (a key of `tokens`, or None for anonymous); returns status, JSON, headers."""
        sent = {"content-type": "application/json", **(headers or {})}
        if who is not None:
            sent["authorization"] = "Bearer " + self.tokens[who]
        data = json.dumps(body).encode() if body is not None else None
        status, response_headers, raw = await self.gateway.call(method, path, headers=sent, data=data)
        if response_headers.get("content-type", "").startswith("application/x-ndjson"):
            parsed: Any = [json.loads(line) for line in raw.splitlines()]
        else:
            parsed = json.loads(raw) if raw else None
        return status, parsed, response_headers


async def build_world(gateway: Gateway) -> World:
    await gateway.org("acme")
    await gateway.org("globex")
    ids: dict[str, str] = {}
    for role in ROLES:
        ids[role] = await gateway.user(f"{role}@acme.test", org="acme", role=role)
    ids["outsider"] = await gateway.user("outsider@globex.test", org="globex", role="owner")
    ids["superadmin"] = await gateway.user("root@platform.test", superadmin=True)
    emails = {role: f"{role}@acme.test" for role in ROLES}
    emails |= {"outsider": "outsider@globex.test", "superadmin": "root@platform.test"}
    tokens = {who: await gateway.login(email) for who, email in emails.items()}
    return World(gateway, tokens, ids)
