"""Users, logins and sessions: the identity operations the CLI and the API share (orgs and members: manage/).

Each function runs in the caller's session and bumps the state version when it changes something the hot path
caches, so every gateway process reloads its snapshot.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import sessions
from gateway.db.models import User, utcnow
from gateway.errors import Conflict, Forbidden, Unauthenticated, Unprocessable
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import TokenService
from gateway.policy import store
from gateway.policy.rules import Rule
from gateway.settings import Tokens

SUPERADMIN_ROLE = "superadmin"
SYSTEM_ROLES = ("owner", "admin", "member", "viewer")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class LoginFailed(Unauthenticated):
    """The one answer for unknown email, wrong password and disabled account."""

    slug = "login-failed"
    title = "Invalid email or password"


class EmailUnverified(Forbidden):
    """The right password for an account whose address was never confirmed."""

    slug = "email-unverified"
    title = "Email address not verified"


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL_RE.match(value) or len(value) > 320:
        raise Unprocessable("email: not a valid email address")
    return value


async def create_user(session: AsyncSession, hasher: PasswordHasher, *, email: str, password: str) -> User:
    address = normalise_email(email)
    problem = password_problem(password, email=address)
    if problem:
        raise Unprocessable(problem)
    now = utcnow()
    # Made by an operator (CLI, tests, bootstrap): the address counts as verified.
    user = User(email=address, password_hash=await hasher.hash(password), created_at=now, email_verified_at=now)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("email: a user with this email already exists") from exc
    return user


async def grant_superadmin(session: AsyncSession, user: User) -> None:
    await store.add_rules(session, [Rule("g", ("user:" + user.id, SUPERADMIN_ROLE, "*"))], origin="api")


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    settings: Tokens,
    *,
    email: str,
    password: str,
    client: sessions.Client,
    throttle: LoginThrottle,
) -> sessions.TokenPair:
    """Check the password (always one Argon2 run, whether or not the user exists) and issue tokens. Failures
    are throttled per email (known or not) and per client IP."""
    try:
        address = normalise_email(email)
    except Unprocessable:
        address = None
    account = address or email.strip().lower()[:320]
    await throttle.check(account, client.ip)
    user = await session.scalar(select(User).where(User.email == address, User.kind == "human")) if address else None
    valid, new_hash = await hasher.verify(password, user.password_hash if user else None)
    if user is None or not valid or user.disabled:
        await throttle.failed(account, client.ip)
        raise LoginFailed()
    await throttle.succeeded(account)
    if user.email_verified_at is None:  # only after the right password: no enumeration
        raise EmailUnverified("confirm your email address first: follow the link we sent")
    if new_hash:
        user.password_hash = new_hash
    return await sessions.start(session, tokens, settings, user.id, client)
