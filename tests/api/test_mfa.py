"""TOTP and backup codes: enrolment, the MFA challenge, replay, skew, attempt limits, single use, removal
(REQ-32 to REQ-36, REQ-18, REQ-22, REQ-27, REQ-14)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from tests.api.mailbox import Mailbox, mailing_gateway
from tests.conftest import PASSWORD, Gateway, Upstream, load_system_policy


@pytest.fixture
async def mailing(db_url: str, upstream: Upstream, tmp_path: Path) -> Any:
    await load_system_policy(db_url)
    async with mailing_gateway(db_url, upstream, tmp_path) as pair:
        yield pair


async def _post(
    gateway: Gateway, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any, Any]:
    status, headers, raw = await gateway.call("POST", path, json=body if body is not None else {}, token=token)
    return status, json.loads(raw) if raw else None, headers


CONFIRMED: dict[str, str] = {}


def _code(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


async def _enrolled(gateway: Gateway, email: str = "ann@example.test") -> tuple[str, list[str], str]:
    """(secret, backup codes, access token) for a user who turned TOTP on; `CONFIRMED[secret]` is the code
    that confirmed it."""
    await gateway.user(email)
    _, login, _ = await _post(gateway, "/auth/login", {"email": email, "password": PASSWORD})
    token = login["access_token"]
    status, enrolment, headers = await _post(gateway, "/auth/mfa/totp", token=token)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    uri = urlparse(enrolment["otpauth_uri"])
    secret = parse_qs(uri.query)["secret"][0]
    assert secret == enrolment["secret"]
    assert len(secret) >= 32, "160 bits"
    assert uri.scheme == "otpauth"
    confirm = _code(secret)
    status, codes, _ = await _post(gateway, "/auth/mfa/totp/confirm", {"code": confirm}, token=token)
    assert status == 200, codes
    CONFIRMED[secret] = confirm
    return secret, codes["backup_codes"], token


async def _challenge(gateway: Gateway, email: str = "ann@example.test") -> str:
    status, body, headers = await _post(gateway, "/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200
    assert set(body) == {"mfa_required", "mfa_token", "expires_in"}
    assert body["expires_in"] <= 300
    assert headers["Cache-Control"] == "no-store"
    token: str = body["mfa_token"]
    return token


async def test_enrolment_is_pending_until_a_code_confirms_it(mailing: tuple[Gateway, Mailbox]) -> None:
    """Before confirming, login is password-only; a wrong confirm code is 422; after it, login needs the
    code and the user is told by email. /auth/me never shows the secret."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    _, login, _ = await _post(gateway, "/auth/login", {"email": "ann@example.test", "password": PASSWORD})
    token = login["access_token"]
    _, enrolment, _ = await _post(gateway, "/auth/mfa/totp", token=token)
    _, plain, _ = await _post(gateway, "/auth/login", {"email": "ann@example.test", "password": PASSWORD})
    assert "access_token" in plain
    wrong = "000000" if _code(enrolment["secret"]) != "000000" else "111111"
    assert (await _post(gateway, "/auth/mfa/totp/confirm", {"code": wrong}, token=token))[0] == 422
    status, codes, _ = await _post(gateway, "/auth/mfa/totp/confirm", {"code": _code(enrolment["secret"])}, token=token)
    assert status == 200
    assert len(codes["backup_codes"]) == 10
    assert len(set(codes["backup_codes"])) == 10
    _, _, me = await gateway.call("GET", "/auth/me", token=token)
    assert json.loads(me)["mfa"] is True
    assert enrolment["secret"] not in me.decode()
    await mailbox.wait_for("ann@example.test", "Two-step sign-in is on")
    assert (await _post(gateway, "/auth/mfa/totp", token=token))[0] == 409


async def test_mfa_login_needs_the_code_and_the_challenge_is_single_purpose(
    mailing: tuple[Gateway, Mailbox],
) -> None:
    """The password alone yields only a challenge, which is no Bearer token; the code completes the login."""
    gateway, _ = mailing
    secret, _, _ = await _enrolled(gateway)  # the current step is spent: the next one is still in the window
    challenge = await _challenge(gateway)
    assert (await gateway.call("GET", "/auth/me", token=challenge))[0] == 401
    assert (await _post(gateway, "/auth/refresh", {"refresh_token": challenge}))[0] == 401
    status, tokens, headers = await _post(
        gateway, "/auth/login/mfa", {"mfa_token": challenge, "code": _code(secret, 30)}
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert (await gateway.call("GET", "/auth/me", token=tokens["access_token"]))[0] == 200
    assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": challenge, "code": _code(secret, 30)}))[0] == 401


async def test_a_code_is_accepted_once_and_only_near_now(mailing: tuple[Gateway, Mailbox]) -> None:
    """Replaying an accepted code fails; a code from 90 s ago fails."""
    gateway, _ = mailing
    secret, _, _ = await _enrolled(gateway)  # the confirm code's step is spent
    same_step = CONFIRMED[secret]
    assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": same_step}))[
        0
    ] == 401
    old = _code(secret, -90)
    assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": old}))[0] == 401


async def test_a_challenge_dies_after_five_wrong_codes(mailing: tuple[Gateway, Mailbox]) -> None:
    """After five wrong codes even the right one is refused on that challenge; the account's second factor is
    then locked too, so a new challenge gets 429 with Retry-After."""
    gateway, _ = mailing
    secret, _, _ = await _enrolled(gateway)
    challenge = await _challenge(gateway)
    right = _code(secret, 30)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": challenge, "code": wrong}))[0] == 401
    assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": challenge, "code": right}))[0] == 401
    status, _, headers = await _post(
        gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": right}
    )
    assert status == 429
    assert int(headers["Retry-After"]) > 0


async def test_wrong_codes_across_challenges_lock_the_second_factor(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """One wrong code per fresh challenge still counts per account: past the budget, codes are refused with a
    growing lock (429), the user gets one email, and after the lock the right code works again."""
    await load_system_policy(db_url)
    login = {"free_failures": 3, "base_lock_seconds": 1, "max_lock_seconds": 2}
    async with mailing_gateway(db_url, upstream, tmp_path, login=login) as (gateway, mailbox):
        secret, _, _ = await _enrolled(gateway)
        right = _code(secret, 30)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        statuses = []
        for _ in range(4):
            body = {"mfa_token": await _challenge(gateway), "code": wrong}
            statuses.append((await _post(gateway, "/auth/login/mfa", body))[0])
        assert statuses[:3] == [401, 401, 401]
        assert 429 in statuses[3:], statuses
        assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": right}))[
            0
        ] == 429
        notice = await mailbox.wait_for("ann@example.test", "Sign-in codes refused")
        assert "change it" in notice.body
        await asyncio.sleep(2.1)
        body = {"mfa_token": await _challenge(gateway), "code": _code(secret, 30)}
        assert (await _post(gateway, "/auth/login/mfa", body))[0] == 200
        notices = [m for m in mailbox.to("ann@example.test") if m.subject == "Sign-in codes refused"]
        assert len(notices) == 1


async def test_backup_codes_work_once_and_regenerating_voids_them(mailing: tuple[Gateway, Mailbox]) -> None:
    """A backup code signs in once (the user is told); concurrent uses succeed once; new codes void old ones."""
    gateway, mailbox = mailing
    _, codes, token = await _enrolled(gateway)
    challenges = [await _challenge(gateway) for _ in range(4)]
    answers = await asyncio.gather(
        *(_post(gateway, "/auth/login/mfa", {"mfa_token": challenge, "code": codes[0]}) for challenge in challenges)
    )
    assert sorted(status for status, _, _ in answers) == [200, 401, 401, 401]
    await mailbox.wait_for("ann@example.test", "backup code was used")
    status, fresh, _ = await _post(gateway, "/auth/mfa/backup-codes", token=token)
    assert status == 200
    assert (await _post(gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": codes[1]}))[
        0
    ] == 401
    status, _, _ = await _post(
        gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": fresh["backup_codes"][0]}
    )
    assert status == 200


async def test_turning_totp_off_needs_password_and_a_current_factor(mailing: tuple[Gateway, Mailbox]) -> None:
    """A bearer token alone, or a wrong password, is 403; password plus a backup code turns it off and the user
    is told; then the password alone signs in again."""
    gateway, mailbox = mailing
    _, codes, token = await _enrolled(gateway)

    async def remove(body: dict[str, str]) -> int:
        return (await gateway.call("DELETE", "/auth/mfa/totp", json=body, token=token))[0]

    assert await remove({"password": "wrong password!", "code": codes[0]}) == 403
    assert await remove({"password": PASSWORD, "code": "00000-00000"}) == 403
    assert await remove({"password": PASSWORD, "code": codes[0]}) == 204
    await mailbox.wait_for("ann@example.test", "Two-step sign-in is off")
    _, login, _ = await _post(gateway, "/auth/login", {"email": "ann@example.test", "password": PASSWORD})
    assert "access_token" in login


async def test_a_password_reset_does_not_bypass_mfa(mailing: tuple[Gateway, Mailbox]) -> None:
    """After a reset, the new password still leads to the MFA challenge only."""
    gateway, mailbox = mailing
    await _enrolled(gateway)
    await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    link = await mailbox.wait_for("ann@example.test", "Reset your password")
    new = "violet tram overture"
    assert (await _post(gateway, "/auth/reset-password", {"token": link.token, "password": new}))[0] == 200
    _, body, _ = await _post(gateway, "/auth/login", {"email": "ann@example.test", "password": new})
    assert body["mfa_required"] is True
    assert "access_token" not in body


async def test_totp_secrets_are_sealed_with_the_encryption_key(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """With encryption_key set the stored secret is a Fernet token, not the secret, and MFA still works;
    a wrong key in the configuration is refused at start."""
    from sqlalchemy import select

    from gateway.db.models import TotpFactor
    from gateway.identity.sealing import new_key
    from gateway.settings import ConfigError
    from tests.conftest import gateway_settings, serving

    key = new_key()
    settings = gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), encryption_key=key)
    async with serving(settings, upstream) as gateway:
        secret, _, _ = await _enrolled(gateway)
        async with gateway.runtime.services.sessions() as db:
            stored = await db.scalar(select(TotpFactor.secret))
        assert stored is not None
        assert stored.startswith("fernet:")
        assert secret not in stored
        status, _, _ = await _post(
            gateway, "/auth/login/mfa", {"mfa_token": await _challenge(gateway), "code": _code(secret, 30)}
        )
        assert status == 200
    with pytest.raises(ConfigError, match="encryption_key"):
        gateway_settings(db_url, upstream.url, encryption_key="not-a-key")


async def test_superadmins_can_be_made_to_enrol_before_using_admin(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """With login.superadmins_need_mfa, a superadmin without TOTP gets 403 mfa-enrollment-required on /admin,
    can still enrol under /auth, and then uses /admin; other users are not affected."""
    from tests.conftest import gateway_settings, serving

    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), login={"superadmins_need_mfa": True}
    )
    await load_system_policy(db_url)
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("admin@acme.test", org="acme", role="admin")
        admin = await gateway.login("admin@acme.test")
        assert (await gateway.call("GET", "/admin/orgs/acme/members", token=admin))[0] == 200
        await gateway.user("root@example.test", superadmin=True)
        _, login, _ = await _post(gateway, "/auth/login", {"email": "root@example.test", "password": PASSWORD})
        status, _, raw = await gateway.call("GET", "/admin/orgs", token=login["access_token"])
        assert status == 403
        assert json.loads(raw)["type"] == "urn:gateway:problem:mfa-enrollment-required"
        token = login["access_token"]
        _, enrolment, _ = await _post(gateway, "/auth/mfa/totp", token=token)
        secret = enrolment["secret"]
        assert (await _post(gateway, "/auth/mfa/totp/confirm", {"code": _code(secret)}, token=token))[0] == 200
        assert (await gateway.call("GET", "/admin/orgs", token=token))[0] == 200
