"""Second factors: TOTP (RFC 6238) and backup codes, and the short-lived challenge between password and code.

- TOTP: a 160-bit secret from the CSPRNG, SHA-1, 6 digits, 30 s, sealed at rest when an encryption key is
  configured; active only after a code confirms it. A code
  is accepted for the current step ±1, and each step at most once per user (an atomic compare-and-set of the
  last accepted step), so a seen code cannot be replayed.
- Backup codes: 10 codes of 50 random bits, shown once, stored as Argon2id, each usable once; regenerating
  voids the old ones.
- A challenge is an opaque single-purpose secret (not a JWT: it can never pass as a Bearer token), valid for
  5 minutes and dead after 5 wrong codes.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time

import pyotp
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import BackupCode, MfaChallenge, TotpFactor, User, utcnow
from gateway.errors import Conflict, InvalidToken, NotFound
from gateway.identity.passwords import PasswordHasher
from gateway.identity.sealing import Sealer
from gateway.identity.tokens import secret_digest

ISSUER = "casbin-gateway"
STEP = 30
CHALLENGE_TTL = dt.timedelta(minutes=5)
CHALLENGE_TRIES = 5
BACKUP_CODES = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)


# -- TOTP -------------------------------------------------------------------------------------------------


async def confirmed_factor(db: AsyncSession, user_id: str) -> TotpFactor | None:
    factor = await db.get(TotpFactor, user_id, populate_existing=True)
    return factor if factor is not None and factor.confirmed_at is not None else None


async def enrol(db: AsyncSession, sealer: Sealer, user: User) -> tuple[str, str]:
    """A new, unconfirmed secret; returns (base32 secret, otpauth URI). Refused while a confirmed one exists."""
    if await confirmed_factor(db, user.id) is not None:
        raise Conflict("totp: already active; remove it first")
    secret = pyotp.random_base32(length=32)  # 32 base32 characters = 160 bits
    existing = await db.get(TotpFactor, user.id)
    if existing is not None:
        await db.delete(existing)
        await db.flush()
    db.add(TotpFactor(user_id=user.id, secret=sealer.seal(secret), created_at=utcnow(), confirmed_at=None, last_step=0))
    await db.flush()
    uri = pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=user.email or user.id, issuer_name=ISSUER)
    return secret, uri


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (current ±1) whose code equals `code`, compared in constant time."""
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int(now // STEP)
    found = None
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.at(step * STEP), code):
            found = step
    return found


async def _accept(db: AsyncSession, sealer: Sealer, factor: TotpFactor, code: str) -> bool:
    step = _matching_step(sealer.open(factor.secret), code.strip(), time.time())
    if step is None:
        return False
    # Compare-and-set: of two concurrent uses of one code, or a replay, only one moves last_step.
    moved = await db.execute(
        update(TotpFactor)
        .where(TotpFactor.user_id == factor.user_id, TotpFactor.last_step < step)
        .values(last_step=step)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def confirm(db: AsyncSession, hasher: PasswordHasher, sealer: Sealer, user: User, code: str) -> list[str] | None:
    """Activate the pending secret with a valid code; returns fresh backup codes, or None for a wrong code."""
    factor = await db.get(TotpFactor, user.id)
    if factor is None:
        raise NotFound("totp: nothing to confirm; enrol first")
    if factor.confirmed_at is not None:
        raise Conflict("totp: already active")
    if not await _accept(db, sealer, factor, code):
        return None
    factor.confirmed_at = utcnow()
    return await regenerate_backup_codes(db, hasher, user)


async def verify_totp(db: AsyncSession, sealer: Sealer, user_id: str, code: str) -> bool:
    factor = await confirmed_factor(db, user_id)
    return factor is not None and await _accept(db, sealer, factor, code)


async def remove(db: AsyncSession, user_id: str) -> None:
    await db.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    await db.execute(delete(BackupCode).where(BackupCode.user_id == user_id))


# -- backup codes -----------------------------------------------------------------------------------------


def _new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))  # 31^10 ≈ 2^49.5
    return f"{raw[:5]}-{raw[5:]}"


async def regenerate_backup_codes(db: AsyncSession, hasher: PasswordHasher, user: User) -> list[str]:
    """Ten new codes, shown once; every older code stops working."""
    await db.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
    codes = [_new_code() for _ in range(BACKUP_CODES)]
    for code in codes:
        db.add(BackupCode(user_id=user.id, code_hash=await hasher.hash(code), used_at=None))
    await db.flush()
    return codes


async def use_backup_code(db: AsyncSession, hasher: PasswordHasher, user_id: str, code: str) -> bool:
    """True when `code` is one of the user's unused codes; it is then spent (exactly once under concurrency)."""
    typed = code.strip().lower()
    rows = list(await db.scalars(select(BackupCode).where(BackupCode.user_id == user_id, BackupCode.used_at.is_(None))))
    for row in rows:
        valid, _ = await hasher.verify(typed, row.code_hash)
        if valid:
            spent = await db.execute(
                update(BackupCode).where(BackupCode.id == row.id, BackupCode.used_at.is_(None)).values(used_at=utcnow())
            )
            return spent.rowcount == 1  # type: ignore[attr-defined,no-any-return]
    return False


# -- challenges -------------------------------------------------------------------------------------------


async def open_challenge(db: AsyncSession, user_id: str, *, ip: str, user_agent: str) -> tuple[str, int]:
    """After the right password of an MFA user: (challenge token, seconds it lives)."""
    token = "mfa_" + secrets.token_urlsafe(32)
    now = utcnow()
    db.add(
        MfaChallenge(
            user_id=user_id,
            token_hash=secret_digest(token),
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
            failures=0,
            ip=ip[:64],
            user_agent=user_agent[:255],
        )
    )
    await db.flush()
    return token, int(CHALLENGE_TTL.total_seconds())


async def live_challenge(db: AsyncSession, token: str) -> MfaChallenge:
    row = await db.scalar(select(MfaChallenge).where(MfaChallenge.token_hash == secret_digest(token)))
    if row is None or row.used_at is not None or row.expires_at <= utcnow() or row.failures >= CHALLENGE_TRIES:
        raise InvalidToken("MFA challenge invalid, used, expired or failed too often; sign in again")
    return row


async def fail_challenge(db: AsyncSession, row: MfaChallenge) -> None:
    await db.execute(update(MfaChallenge).where(MfaChallenge.id == row.id).values(failures=MfaChallenge.failures + 1))


async def close_challenge(db: AsyncSession, row: MfaChallenge) -> None:
    """Spend the challenge; of concurrent completions exactly one gets tokens."""
    closed = await db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == row.id, MfaChallenge.used_at.is_(None), MfaChallenge.failures < CHALLENGE_TRIES)
        .values(used_at=utcnow())
    )
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidToken("MFA challenge already used; sign in again")
