"""Request and response bodies of the /auth API."""

from __future__ import annotations

import datetime as dt

import msgspec


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str = msgspec.field()
    password: str = msgspec.field()


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class TokenResponse(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type name, not a secret


class MembershipView(msgspec.Struct):
    org: str
    name: str
    role: str


class MeResponse(msgspec.Struct):
    id: str
    email: str | None
    created_at: dt.datetime
    memberships: list[MembershipView]
    global_roles: list[str]


class SessionView(msgspec.Struct):
    id: str
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str
    user_agent: str
    current: bool


class LogoutResult(msgspec.Struct):
    sessions_ended: int
