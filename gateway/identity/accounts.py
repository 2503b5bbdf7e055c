"""Users, logins and sessions: the identity operations the CLI and the API share (orgs and members: manage/).

Each function runs in the caller's session and bumps the state version when it changes something the hot path
caches, so every gateway process reloads its snapshot.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.audit import write_event
from gateway.db.models import BootstrapToken, PolicyRule, User, utcnow
from gateway.errors import Conflict, Forbidden, InvalidToken, Unauthenticated, Unprocessable
from gateway.identity import mail, mfa, sessions
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.sealing import Sealer
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import TokenService, secret_digest
from gateway.policy import store
from gateway.policy.rules import Rule

SUPERADMIN_ROLE = "superadmin"
SYSTEM_ROLES = ("owner", "admin", "member", "viewer")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class LoginFailed(Unauthenticated):
    """The one answer for unknown email, wrong password and disabled account."""

    slug = "login-failed"
    title = "Invalid email or password"


@dataclass(frozen=True, slots=True)
class MfaRequired:
    """The password was right; the login continues at /auth/login/mfa with this challenge."""

    mfa_token: str
    expires_in: int


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
    throttle: LoginThrottle,
    *,
    email: str,
    password: str,
    client: sessions.Client,
) -> sessions.TokenPair | MfaRequired:
    """Password login for tokens (POST /auth/login): `first_factor`, then a new session with an access and a
    refresh token, or only the MFA challenge."""
    user = await first_factor(session, hasher, throttle, email=email, password=password, client=client)
    if isinstance(user, MfaRequired):
        return user
    return await sessions.start(session, tokens, user.id, client)


async def first_factor(
    session: AsyncSession,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    *,
    email: str,
    password: str,
    client: sessions.Client,
) -> User | MfaRequired:
    """Check the password (always one Argon2 run, whether or not the user exists): the user, who may now get a
    session, or only an MFA challenge when the user has a second factor. Failures are throttled per email (known
    or not) and per client IP; when password hashing is saturated the login is refused (503) before anything is
    looked up. The JSON login and the browser portal both come through here."""
    try:
        address = normalise_email(email)
    except Unprocessable:
        address = None
    account = address or email.strip().lower()[:320]
    await throttle.check(account, client.ip)
    with hasher.admit():  # 503 now, before the lookup, when hashing is saturated: the same for every email
        user = (
            await session.scalar(select(User).where(User.email == address, User.kind == "human")) if address else None
        )
        valid, new_hash = await hasher.verify(password, user.password_hash if user else None)
    if user is None or not valid or user.disabled:
        await throttle.failed(account, client.ip)
        raise LoginFailed()
    await throttle.succeeded(account)
    if user.email_verified_at is None:  # only after the right password: no enumeration
        raise EmailUnverified("confirm your email address first: follow the link we sent")
    if new_hash:
        user.password_hash = new_hash
    return await unless_mfa(session, user, client)


async def unless_mfa(session: AsyncSession, user: User, client: sessions.Client) -> User | MfaRequired:
    """After a first factor (a password, an outside provider): the user, who may now get a session, or only an
    MFA challenge when the user has a confirmed second factor."""
    if await mfa.confirmed_factor(session, user.id) is not None:
        token, ttl = await mfa.open_challenge(session, user.id, ip=client.ip, user_agent=client.user_agent)
        return MfaRequired(mfa_token=token, expires_in=ttl)
    return user


async def sign_in(
    session: AsyncSession, tokens: TokenService, user: User, client: sessions.Client
) -> sessions.TokenPair | MfaRequired:
    """The end of a first factor for tokens (an outside provider's callback): a new session and its tokens, or
    only an MFA challenge when the user has a confirmed second factor."""
    checked = await unless_mfa(session, user, client)
    if isinstance(checked, MfaRequired):
        return checked
    return await sessions.start(session, tokens, user.id, client)


async def complete_mfa(
    session: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    throttle: LoginThrottle,
    sealer: Sealer,
    *,
    challenge_token: str,
    code: str,
) -> tuple[sessions.TokenPair, bool]:
    """The second step of an MFA login for tokens: `second_factor`, then a new session. Returns the tokens and
    whether a backup code was spent."""
    user, client, used_backup = await second_factor(
        session, hasher, throttle, sealer, challenge_token=challenge_token, code=code
    )
    return await sessions.start(session, tokens, user.id, client), used_backup


async def second_factor(
    session: AsyncSession,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    sealer: Sealer,
    *,
    challenge_token: str,
    code: str,
) -> tuple[User, sessions.Client, bool]:
    """The second step of an MFA login: a TOTP code or a backup code for a live challenge. Returns the user,
    where the login came from (as the password step saw it) and whether a backup code was spent. A wrong code
    counts against the challenge (5 and it is dead) and against the account across challenges (then 429 with a
    growing lock, and an email); the challenge count is committed at once."""
    challenge = await mfa.live_challenge(session, challenge_token)
    user = await session.get(User, challenge.user_id)
    if user is None or user.disabled:
        raise InvalidToken("MFA challenge invalid; sign in again")
    await throttle.check_factor(user.id)
    used_backup = False
    accepted = await mfa.verify_totp(session, sealer, user.id, code)
    if not accepted and "-" in code:
        accepted = used_backup = await mfa.use_backup_code(session, hasher, user.id, code)
    if not accepted:
        await mfa.fail_challenge(session, challenge)
        if await throttle.factor_failed(user.id) and user.email:
            mail.enqueue(
                session,
                to=user.email,
                subject="Sign-in codes refused",
                body="Several wrong two-step sign-in codes were entered for your account after its password, so "
                "codes are refused for a while. If this was not you, your password is known to someone else: "
                "change it.\n",
            )
        await session.commit()  # the counts and the notice must survive the error response
        raise InvalidToken("wrong code")
    await throttle.factor_succeeded(user.id)
    await mfa.close_challenge(session, challenge)
    return user, sessions.Client(ip=challenge.ip, user_agent=challenge.user_agent), used_backup


BOOTSTRAP_TTL = dt.timedelta(hours=1)


async def superadmin_exists(session: AsyncSession) -> bool:
    grants = await session.scalars(
        select(PolicyRule.v0).where(PolicyRule.ptype == "g", PolicyRule.v1 == SUPERADMIN_ROLE, PolicyRule.v2 == "*")
    )
    return any(subject.startswith("user:") for subject in grants)


async def new_bootstrap_token(session: AsyncSession) -> str:
    """A one-time secret that creates the first superadmin (POST /auth/bootstrap); valid one hour, and only
    while no superadmin exists."""
    if await superadmin_exists(session):
        raise Conflict("bootstrap: a superadmin exists already")
    token = "bt_" + secrets.token_urlsafe(32)
    now = utcnow()
    session.add(BootstrapToken(token_hash=secret_digest(token), created_at=now, expires_at=now + BOOTSTRAP_TTL))
    return token


async def bootstrap(session: AsyncSession, hasher: PasswordHasher, *, token: str, email: str, password: str) -> User:
    """Spend a bootstrap token on the first superadmin. Refused once any superadmin exists."""
    claimed = await session.execute(
        update(BootstrapToken)
        .where(
            BootstrapToken.token_hash == secret_digest(token),
            BootstrapToken.used_at.is_(None),
            BootstrapToken.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
    )
    if claimed.rowcount != 1 or await superadmin_exists(session):  # type: ignore[attr-defined]
        raise Forbidden("bootstrap: the token is invalid, used or expired, or a superadmin exists already")
    user = await create_user(session, hasher, email=email, password=password)
    await grant_superadmin(session, user)
    write_event(session, "bootstrap", "user.bootstrap", target=user.id, after={"email": user.email, "superadmin": True})
    return user
