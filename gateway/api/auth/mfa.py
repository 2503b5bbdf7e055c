"""Second factors: TOTP enrolment, confirmation and removal, and backup codes."""

from __future__ import annotations

from litestar import Controller, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth.common import NO_STORE, PRINCIPAL, human, notify
from gateway.api.schemas import BackupCodes, CodeRequest, MfaRemoveRequest, TotpEnrolment
from gateway.db.audit import write_event
from gateway.errors import Conflict, Forbidden, Unprocessable
from gateway.identity import lifecycle, mfa
from gateway.identity.passwords import PasswordHasher
from gateway.identity.sealing import Sealer
from gateway.identity.tokens import Principal


class MfaController(Controller):
    path = "/auth/mfa"
    tags = ["second factors"]
    dependencies = PRINCIPAL

    @post("/totp", status_code=200)
    async def enrol_totp(
        self, principal: NamedDependency[Principal], sealer: NamedDependency[Sealer], db: NamedDependency[AsyncSession]
    ) -> Response[TotpEnrolment]:
        """Start TOTP enrolment (needs a recent sign-in): the secret and its otpauth:// URI, shown only now.
        Nothing changes for sign-in until POST /auth/mfa/totp/confirm."""
        lifecycle.require_recent(principal)
        user = await human(db, principal)
        secret, uri = await mfa.enrol(db, sealer, user)
        return Response(TotpEnrolment(secret=secret, otpauth_uri=uri), headers=NO_STORE)

    @post("/totp/confirm", status_code=200)
    async def confirm_totp(
        self,
        data: JSONBody[CodeRequest],
        principal: NamedDependency[Principal],
        hasher: NamedDependency[PasswordHasher],
        sealer: NamedDependency[Sealer],
        db: NamedDependency[AsyncSession],
    ) -> Response[BackupCodes]:
        """Activate TOTP with a current code; returns ten backup codes, shown once."""
        lifecycle.require_recent(principal)
        user = await human(db, principal)
        codes = await mfa.confirm(db, hasher, sealer, user, data.code)
        if codes is None:
            raise Unprocessable("code: not a current code for this secret")
        await notify(db, principal.session_id, "Two-step sign-in is on", "An authenticator app was added.")
        write_event(db, principal.subject, "user.mfa.enable", target=user.id)
        return Response(BackupCodes(backup_codes=codes), headers=NO_STORE)

    @delete("/totp", status_code=204)
    async def remove_totp(
        self,
        data: JSONBody[MfaRemoveRequest],
        principal: NamedDependency[Principal],
        hasher: NamedDependency[PasswordHasher],
        sealer: NamedDependency[Sealer],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Turn TOTP off: needs the password and a current factor (TOTP or backup code); the user is told."""
        user = await human(db, principal)
        valid, _ = await hasher.verify(data.password, user.password_hash)
        factor_ok = valid and (
            await mfa.verify_totp(db, sealer, user.id, data.code)
            or await mfa.use_backup_code(db, hasher, user.id, data.code)
        )
        if not factor_ok:
            raise Forbidden("password and a current code are needed to turn two-step sign-in off")
        await mfa.remove(db, user.id)
        write_event(db, principal.subject, "user.mfa.disable", target=user.id)
        await notify(db, principal.session_id, "Two-step sign-in is off", "Your authenticator app was removed.")

    @post("/backup-codes", status_code=200)
    async def regenerate_backup_codes(
        self,
        principal: NamedDependency[Principal],
        hasher: NamedDependency[PasswordHasher],
        db: NamedDependency[AsyncSession],
    ) -> Response[BackupCodes]:
        """Ten new backup codes (needs a recent sign-in and active TOTP); the old ones stop working."""
        lifecycle.require_recent(principal)
        user = await human(db, principal)
        if await mfa.confirmed_factor(db, user.id) is None:
            raise Conflict("totp: turn on two-step sign-in first")
        codes = await mfa.regenerate_backup_codes(db, hasher, user)
        write_event(db, principal.subject, "user.mfa.backup_codes", target=user.id)
        await notify(db, principal.session_id, "New backup codes", "New backup codes were made; the old ones are void.")
        return Response(BackupCodes(backup_codes=codes), headers=NO_STORE)
