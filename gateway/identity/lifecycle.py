"""The account lifecycle: register and verify an email, forgot and reset a password, change the password or
the email, edit the profile, re-authenticate.

Every secret sent by email is single-use (claimed by one atomic UPDATE), stored as SHA-256 only, expires, and is
voided by a newer one of the same kind. Answers that could reveal whether an email has an account (register,
forgot-password, email change) are the same either way; the difference only reaches the mailbox.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.audit import write_event
from gateway.db.models import EmailToken, Session, User, utcnow
from gateway.errors import BadRequest, Conflict, Forbidden, InvalidToken, ReauthRequired, Unprocessable
from gateway.identity import mail, sessions
from gateway.identity.accounts import normalise_email
from gateway.identity.passwords import PasswordHasher, password_problem
from gateway.identity.tokens import Principal, TokenService, secret_digest
from gateway.settings import Mail

VERIFY_TTL = dt.timedelta(hours=24)
RESET_TTL = dt.timedelta(hours=1)
EMAIL_CHANGE_TTL = dt.timedelta(hours=1)
REAUTH_SECONDS = 15 * 60
RESETS_PER_HOUR = 5
_BAD_TOKEN = "token: invalid, already used or expired"  # noqa: S105 - an error message, not a secret


async def _issue(db: AsyncSession, user: User, purpose: str, ttl: dt.timedelta, *, new_email: str | None = None) -> str:
    """A new single-use token; older unused ones of the same purpose stop working."""
    now = utcnow()
    await db.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user.id, EmailToken.purpose == purpose, EmailToken.used_at.is_(None))
        .values(used_at=now)
    )
    token = "et_" + secrets.token_urlsafe(32)
    db.add(
        EmailToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=secret_digest(token),
            new_email=new_email,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    await db.flush()
    return token


async def _find(db: AsyncSession, token: str, purposes: tuple[str, ...]) -> EmailToken:
    row = await db.scalar(select(EmailToken).where(EmailToken.token_hash == secret_digest(token)))
    if row is None or row.purpose not in purposes or row.used_at is not None or row.expires_at <= utcnow():
        raise BadRequest(_BAD_TOKEN)
    return row


async def _claim(db: AsyncSession, row: EmailToken) -> None:
    """Spend the token: of concurrent callers exactly one succeeds."""
    claimed = await db.execute(
        update(EmailToken)
        .where(EmailToken.id == row.id, EmailToken.used_at.is_(None), EmailToken.expires_at > utcnow())
        .values(used_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise BadRequest(_BAD_TOKEN)


def require_recent(principal: Principal) -> None:
    """Sensitive changes need a factor proved within the last 15 minutes (`POST /auth/reauth` refreshes it)."""
    if time.time() - principal.auth_time > REAUTH_SECONDS:
        raise ReauthRequired("this change needs a recent sign-in: POST /auth/reauth first")


async def _user(db: AsyncSession, principal: Principal) -> User:
    user = await db.get(User, principal.user_id)
    if user is None or user.disabled or user.kind != "human":
        raise InvalidToken("token rejected")
    return user


# -- registration and verification ------------------------------------------------------------------------


async def register(db: AsyncSession, hasher: PasswordHasher, settings: Mail, *, email: str, password: str) -> None:
    """Create an unverified account and mail a verification link; for a taken address, mail its owner instead.
    The caller sees the same 202 either way, after the same Argon2 work."""
    address = normalise_email(email)
    problem = password_problem(password, email=address)
    if problem:
        raise Unprocessable(problem)
    password_hash = await hasher.hash(password)
    existing = await db.scalar(select(User).where(User.email == address))
    if existing is None:
        user = User(email=address, password_hash=password_hash, created_at=utcnow(), kind="human", name="")
        db.add(user)
        try:
            async with db.begin_nested():
                await db.flush()
        except IntegrityError:
            existing = await db.scalar(select(User).where(User.email == address))
        else:
            write_event(db, "user:" + user.id, "user.register", target=user.id, after={"email": address})
            token = await _issue(db, user, "verify", VERIFY_TTL)
            mail.enqueue(
                db,
                to=address,
                subject="Confirm your email address",
                body="Confirm your address to finish signing up (the link works once, for 24 hours):\n\n"
                f"{mail.link(settings, '/verify-email', token)}\n\nIf you did not sign up, ignore this email.\n",
            )
            return
    mail.enqueue(
        db,
        to=address,
        subject="Someone tried to sign up with your address",
        body="Someone tried to create an account with this address, which already has one. If it was you, "
        f"sign in, or reset your password at {settings.public_base_url.rstrip('/')}/forgot-password.\n",
    )


async def verify_email(db: AsyncSession, settings: Mail, *, token: str) -> None:
    """Follow a verification or email-change link (once)."""
    row = await _find(db, token, ("verify", "email-change"))
    await _claim(db, row)
    user = await db.get(User, row.user_id)
    if user is None:
        raise BadRequest(_BAD_TOKEN)
    now = utcnow()
    if row.purpose == "verify":
        user.email_verified_at = user.email_verified_at or now
        write_event(db, "user:" + user.id, "user.email.verify", target=user.id, after={"email": user.email})
        return
    taken = await db.scalar(select(func.count()).select_from(User).where(User.email == row.new_email))
    if taken:
        raise Conflict("email: this address now belongs to another account")
    old = user.email
    user.email, user.email_verified_at = row.new_email, now
    write_event(
        db,
        "user:" + user.id,
        "user.email.change",
        target=user.id,
        before={"email": old},
        after={"email": row.new_email},
    )
    if old:
        mail.enqueue(
            db,
            to=old,
            subject="Your sign-in email changed",
            body=f"The email of your account is now {row.new_email}. If this was not you, contact your "
            "administrator at once.\n",
        )


# -- passwords --------------------------------------------------------------------------------------------


async def forgot_password(db: AsyncSession, settings: Mail, *, email: str, portal: str | None = None) -> None:
    """Mail a reset link (at most RESETS_PER_HOUR per account) if the address has an account; silently
    nothing otherwise. Works while the account is locked out by login throttling. The link opens
    `public_base_url`/reset-password, or the sign-in portal's reset page when `portal` (its origin) is given."""
    try:
        address = normalise_email(email)
    except Unprocessable:
        return
    user = await db.scalar(select(User).where(User.email == address, User.kind == "human"))
    if user is None or user.disabled:
        return
    # Requests for one account count and issue one after another (a write lock on the account's row, on
    # PostgreSQL and SQLite alike): concurrent requests could otherwise all see fewer than the limit.
    await db.execute(update(User).where(User.id == user.id).values(id=User.id))
    recent = await db.scalar(
        select(func.count())
        .select_from(EmailToken)
        .where(
            EmailToken.user_id == user.id,
            EmailToken.purpose == "reset",
            EmailToken.created_at > utcnow() - dt.timedelta(hours=1),
        )
    )
    if (recent or 0) >= RESETS_PER_HOUR:
        return
    token = await _issue(db, user, "reset", RESET_TTL)
    reset_link = f"{portal}/portal/reset?token={token}" if portal else mail.link(settings, "/reset-password", token)
    mail.enqueue(
        db,
        to=address,
        subject="Reset your password",
        body="Use this link to choose a new password (it works once, for one hour):\n\n"
        f"{reset_link}\n\nIf you did not ask for this, ignore this email; "
        "your password has not changed.\n",
    )


async def reset_password(db: AsyncSession, hasher: PasswordHasher, *, token: str, password: str) -> str:
    """Set a new password from a reset link: signs out every session, logs nobody in, leaves MFA as it is.
    Returns the account's email (login throttling forgets its failures)."""
    row = await _find(db, token, ("reset",))
    user = await db.get(User, row.user_id)
    if user is None or user.disabled or user.email is None:
        raise BadRequest(_BAD_TOKEN)
    if user.password_changed_at is not None and user.password_changed_at >= row.created_at:
        raise BadRequest(_BAD_TOKEN)  # the password changed after this link was sent
    problem = password_problem(password, email=user.email)
    if problem:
        raise Unprocessable(problem)  # the link stays usable: nothing was spent
    await _claim(db, row)
    await _set_password(db, hasher, user, password, keep_session=None)
    write_event(db, "user:" + user.id, "user.password.reset", target=user.id)
    mail.enqueue(
        db,
        to=user.email,
        subject="Your password was reset",
        body="Your password was reset and every session was signed out. If this was not you, reset it again "
        "and contact your administrator.\n",
    )
    return user.email


async def _set_password(
    db: AsyncSession, hasher: PasswordHasher, user: User, password: str, *, keep_session: str | None
) -> None:
    user.password_hash = await hasher.hash(password)
    user.password_changed_at = utcnow()
    await db.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user.id, EmailToken.purpose == "reset", EmailToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    await sessions.revoke_all(db, user.id, keep=keep_session)


async def change_password(
    db: AsyncSession, hasher: PasswordHasher, principal: Principal, *, current: str, new: str
) -> int:
    """Needs the current password and a recent sign-in; signs out every other session; returns how many."""
    require_recent(principal)
    user = await _user(db, principal)
    valid, _ = await hasher.verify(current, user.password_hash)
    if not valid:
        raise Forbidden("current_password: wrong password")
    problem = password_problem(new, email=user.email)
    if problem:
        raise Unprocessable(problem.replace("password:", "new_password:", 1))
    before = await db.scalar(
        select(func.count()).select_from(Session).where(Session.user_id == user.id, Session.revoked_at.is_(None))
    )
    await _set_password(db, hasher, user, new, keep_session=principal.session_id)
    write_event(db, principal.subject, "user.password.change", target=user.id)
    mail.enqueue(
        db,
        to=user.email or "",
        subject="Your password was changed",
        body="Your password was changed and your other sessions were signed out. If this was not you, reset "
        "your password at once.\n",
    )
    return max(0, int(before or 0) - 1)


# -- email and profile ------------------------------------------------------------------------------------


async def request_email_change(db: AsyncSession, settings: Mail, principal: Principal, *, new_email: str) -> None:
    """The new address gets a confirmation link; the email changes only when it is followed. The answer is the
    same whether or not the address is taken (then its owner is told instead)."""
    require_recent(principal)
    user = await _user(db, principal)
    address = normalise_email(new_email)
    if address == user.email:
        raise Unprocessable("email: this is already your address")
    taken = await db.scalar(select(func.count()).select_from(User).where(User.email == address))
    if taken:
        mail.enqueue(
            db,
            to=address,
            subject="Someone tried to use your address",
            body="Someone asked to move another account to this address, which already has an account. Nothing "
            "changed.\n",
        )
        return
    token = await _issue(db, user, "email-change", EMAIL_CHANGE_TTL, new_email=address)
    write_event(db, principal.subject, "user.email.change_requested", target=user.id, after={"email": address})
    mail.enqueue(
        db,
        to=address,
        subject="Confirm your new sign-in email",
        body="Follow this link to make this your sign-in address (it works once, for one hour):\n\n"
        f"{mail.link(settings, '/verify-email', token)}\n",
    )
    if user.email:
        mail.enqueue(
            db,
            to=user.email,
            subject="An email change was requested",
            body=f"Someone signed in as you asked to change your sign-in email to {address}. It changes only "
            "once the new address confirms. If this was not you, change your password.\n",
        )


async def update_profile(db: AsyncSession, principal: Principal, *, name: str) -> User:
    if len(name) > 200 or any(ord(ch) < 32 for ch in name):
        raise Unprocessable("name: at most 200 printable characters")
    user = await _user(db, principal)
    before, user.name = user.name, name.strip()
    if before != user.name:
        write_event(
            db, principal.subject, "user.profile", target=user.id, before={"name": before}, after={"name": user.name}
        )
    return user


async def reauth(
    db: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    principal: Principal,
    *,
    password: str,
) -> tuple[str, int]:
    """Prove the password again: the session's `auth_time` moves to now; returns a fresh access token."""
    user = await _user(db, principal)
    valid, _ = await hasher.verify(password, user.password_hash)
    if not valid or principal.session_id is None:
        raise Forbidden("password: wrong password")
    row = await db.get(Session, principal.session_id)
    if row is None or row.revoked_at is not None:
        raise InvalidToken("token revoked")
    row.auth_time = utcnow()
    await db.flush()
    return tokens.issue_access_token(user.id, session_id=row.id, auth_time=int(row.auth_time.timestamp()))
