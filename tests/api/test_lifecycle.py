"""The account lifecycle through real HTTP and a real SMTP server: registration and verification, forgotten
and reset passwords, password and email changes, profile edits, re-authentication (REQ-4, 9-15, 27, 30, 31)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import select, update

from gateway.db.models import EmailToken, OutboxMessage, User
from tests.api.mailbox import Mailbox, mailing_gateway
from tests.conftest import PASSWORD, Gateway, Upstream, load_system_policy, run_cli
from tests.waiting import eventually

NEW = "violet tram overture"


@pytest.fixture
async def mailing(db_url: str, upstream: Upstream, tmp_path: Path) -> Any:
    await load_system_policy(db_url)
    async with mailing_gateway(db_url, upstream, tmp_path) as pair:
        yield pair


async def _post(
    gateway: Gateway, path: str, body: dict[str, Any], token: str | None = None, **headers: str
) -> tuple[int, Any, Any]:
    status, response_headers, raw = await gateway.call("POST", path, json=body, token=token, headers=headers)
    return status, json.loads(raw) if raw else None, response_headers


async def _outbox_empty(gateway: Gateway) -> bool:
    """Every queued message has been handed to the SMTP server."""
    async with gateway.runtime.services.sessions() as db:
        return await db.scalar(select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None))) is None


async def _login(gateway: Gateway, email: str, password: str = PASSWORD) -> tuple[int, Any]:
    status, body, _ = await _post(gateway, "/auth/login", {"email": email, "password": password})
    return status, body


async def test_registration_does_not_reveal_existing_accounts(mailing: tuple[Gateway, Mailbox]) -> None:
    """A new and an existing email get the same 202 body; only the mailboxes differ. The new account logs in
    only after following the single-use link."""
    gateway, mailbox = mailing
    await gateway.user("taken@example.test")
    new = await _post(gateway, "/auth/register", {"email": "new@example.test", "password": NEW})
    taken = await _post(gateway, "/auth/register", {"email": "taken@example.test", "password": NEW})
    assert new[:2] == taken[:2]
    assert new[0] == 202
    notice = await mailbox.wait_for("taken@example.test", "tried to sign up")
    assert "token=" not in notice.body
    status, problem = await _login(gateway, "new@example.test", NEW)
    assert status == 403
    assert problem["type"] == "urn:gateway:problem:email-unverified"
    assert (await _login(gateway, "new@example.test", "wrong password!"))[0] == 401
    link = await mailbox.wait_for("new@example.test", "Confirm your email")
    tampered = link.token[:-2] + ("xy" if not link.token.endswith("xy") else "yz")
    assert (await _post(gateway, "/auth/verify-email", {"token": tampered}))[0] == 400
    assert (await _post(gateway, "/auth/verify-email", {"token": link.token}))[0] == 200
    assert (await _post(gateway, "/auth/verify-email", {"token": link.token}))[0] == 400
    assert (await _login(gateway, "new@example.test", NEW))[0] == 200
    for password, field in (("short", "password"), ("password1234", "password")):
        status, problem, _ = await _post(gateway, "/auth/register", {"email": "x@example.test", "password": password})
        assert status == 422
        assert problem["field"] == field


async def test_links_use_the_configured_origin_not_the_host_header(mailing: tuple[Gateway, Mailbox]) -> None:
    """A forged Host header never reaches a link in an email."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    status, _, _ = await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"}, Host="evil.example")
    assert status == 202
    mail = await mailbox.wait_for("ann@example.test", "Reset your password")
    assert "https://app.example/reset-password?token=" in mail.body
    assert "evil" not in mail.body


async def test_forgot_password_answers_alike_and_reset_is_single_use(mailing: tuple[Gateway, Mailbox]) -> None:
    """Known and unknown emails get the same 202; a reset link works once, signs every session out, returns no
    tokens, and the old password stops working; a newer link voids the older one."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    _, session = await _login(gateway, "ann@example.test")
    known = await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    unknown = await _post(gateway, "/auth/forgot-password", {"email": "nobody@example.test"})
    assert known[:2] == unknown[:2]
    first = (await mailbox.wait_for("ann@example.test", "Reset your password")).token
    await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    second = (await mailbox.wait_for("ann@example.test", "Reset your password", count=2)).token
    assert second != first
    assert (await _post(gateway, "/auth/reset-password", {"token": first, "password": NEW}))[0] == 400
    status, _, _ = await _post(gateway, "/auth/reset-password", {"token": second, "password": "short"})
    assert status == 422, "a bad new password does not spend the link"
    status, body, headers = await _post(gateway, "/auth/reset-password", {"token": second, "password": NEW})
    assert status == 200
    assert "access_token" not in body
    assert headers["Cache-Control"] == "no-store"
    assert (await _post(gateway, "/auth/reset-password", {"token": second, "password": NEW + "!"}))[0] == 400
    assert (await gateway.call("GET", "/auth/me", token=session["access_token"]))[0] == 401
    assert (await _post(gateway, "/auth/refresh", {"refresh_token": session["refresh_token"]}))[0] == 401
    assert (await _login(gateway, "ann@example.test"))[0] == 401
    assert (await _login(gateway, "ann@example.test", NEW))[0] == 200
    await mailbox.wait_for("ann@example.test", "password was reset")


async def test_expired_and_concurrent_reset_links(mailing: tuple[Gateway, Mailbox]) -> None:
    """An expired link is refused; ten concurrent uses of one link succeed exactly once."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    token = (await mailbox.wait_for("ann@example.test", "Reset your password")).token
    answers = await asyncio.gather(
        *(_post(gateway, "/auth/reset-password", {"token": token, "password": f"{NEW} {n}"}) for n in range(10))
    )
    assert sorted(status for status, _, _ in answers) == [200] + [400] * 9
    await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    late = (await mailbox.wait_for("ann@example.test", "Reset", count=2)).token
    async with gateway.runtime.services.sessions() as db:
        await db.execute(update(EmailToken).values(expires_at=EmailToken.created_at))
        await db.commit()
    assert (await _post(gateway, "/auth/reset-password", {"token": late, "password": NEW}))[0] == 400


async def test_lockout_cannot_block_a_reset(mailing: tuple[Gateway, Mailbox]) -> None:
    """A locked-out account can still reset its password, and then signs in once the lock ends."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    for _ in range(6):
        await _login(gateway, "ann@example.test", "wrong password!")
    assert (await _login(gateway, "ann@example.test"))[0] == 429
    assert (await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"}))[0] == 202
    token = (await mailbox.wait_for("ann@example.test", "Reset your password")).token
    assert (await _post(gateway, "/auth/reset-password", {"token": token, "password": NEW}))[0] == 200


async def test_change_password_needs_the_current_one_and_ends_other_sessions(
    mailing: tuple[Gateway, Mailbox],
) -> None:
    """A wrong current password is 403 and changes nothing; the right one changes it, keeps this session,
    ends the others and mails a notice."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    _, here = await _login(gateway, "ann@example.test")
    _, there = await _login(gateway, "ann@example.test")
    body = {"current_password": "wrong password!", "new_password": NEW}
    assert (await _post(gateway, "/auth/change-password", body, token=here["access_token"]))[0] == 403
    assert (await _login(gateway, "ann@example.test"))[0] == 200
    body = {"current_password": PASSWORD, "new_password": NEW}
    status, answer, _ = await _post(gateway, "/auth/change-password", body, token=here["access_token"])
    assert status == 200
    assert answer["other_sessions_ended"] == 2
    assert (await gateway.call("GET", "/auth/me", token=here["access_token"]))[0] == 200
    assert (await gateway.call("GET", "/auth/me", token=there["access_token"]))[0] == 401
    assert (await _post(gateway, "/auth/refresh", {"refresh_token": there["refresh_token"]}))[0] == 401
    await mailbox.wait_for("ann@example.test", "password was changed")
    status, problem, _ = await _post(
        gateway, "/auth/change-password", {"current_password": NEW, "new_password": "x"}, token=here["access_token"]
    )
    assert status == 422
    assert problem["field"] == "new_password"


async def test_sensitive_changes_need_a_recent_sign_in(mailing: tuple[Gateway, Mailbox]) -> None:
    """With auth_time older than 15 minutes, a password or email change is 403 reauth-required; POST
    /auth/reauth with the password gives a fresh token that works."""
    gateway, _ = mailing
    user_id = await gateway.user("ann@example.test")
    _, login = await _login(gateway, "ann@example.test")
    sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
    stale, _ = gateway.runtime.services.tokens.issue_access_token(user_id, session_id=sid, auth_time=0)
    body = {"current_password": PASSWORD, "new_password": NEW}
    status, problem, _ = await _post(gateway, "/auth/change-password", body, token=stale)
    assert status == 403
    assert problem["type"] == "urn:gateway:problem:reauth-required"
    assert (await _post(gateway, "/auth/change-email", {"email": "x@example.test"}, token=stale))[0] == 403
    assert (await _post(gateway, "/auth/mfa/totp", {}, token=stale))[0] == 403
    await gateway.org("acme")
    await gateway.member("acme", "ann@example.test", "member")
    assert (await _post(gateway, "/admin/orgs/acme/members/me/keys", {"name": "k"}, token=stale))[0] == 403
    assert (await _post(gateway, "/auth/reauth", {"password": "wrong password!"}, token=stale))[0] == 403
    status, fresh, headers = await _post(gateway, "/auth/reauth", {"password": PASSWORD}, token=stale)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert (await _post(gateway, "/auth/change-password", body, token=fresh["access_token"]))[0] == 200


async def test_email_change_waits_for_the_new_address(mailing: tuple[Gateway, Mailbox]) -> None:
    """The address changes only when the link sent to the new address is followed (once); the old address is
    told; a taken address gets the same 202."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    await gateway.user("bob@example.test")
    _, login = await _login(gateway, "ann@example.test")
    token = login["access_token"]
    assert (await _post(gateway, "/auth/change-email", {"email": "bob@example.test"}, token=token))[0] == 202
    assert (await _post(gateway, "/auth/change-email", {"email": "ann2@example.test"}, token=token))[0] == 202
    link = await mailbox.wait_for("ann2@example.test", "Confirm your new sign-in email")
    await mailbox.wait_for("ann@example.test", "email change was requested")
    _, _, me = await gateway.call("GET", "/auth/me", token=token)
    assert json.loads(me)["email"] == "ann@example.test"
    assert (await _post(gateway, "/auth/verify-email", {"token": link.token}))[0] == 200
    assert (await _post(gateway, "/auth/verify-email", {"token": link.token}))[0] == 400
    assert (await _login(gateway, "ann2@example.test"))[0] == 200
    assert (await _login(gateway, "ann@example.test"))[0] == 401
    await mailbox.wait_for("ann@example.test", "sign-in email changed")


async def test_profile_edits_take_profile_fields_only(mailing: tuple[Gateway, Mailbox]) -> None:
    """PATCH /auth/me changes the name; privileged or unknown fields are refused with 422 and change nothing."""
    gateway, _ = mailing
    user_id = await gateway.user("ann@example.test")
    _, login = await _login(gateway, "ann@example.test")
    status, _, raw = await gateway.call("PATCH", "/auth/me", json={"name": "Ann"}, token=login["access_token"])
    assert status == 200
    assert json.loads(raw)["name"] == "Ann"
    for body in ({"name": "x", "is_superuser": True}, {"email": "root@x.test"}, {"disabled": False}):
        status, _, raw = await gateway.call("PATCH", "/auth/me", json=body, token=login["access_token"])
        assert status == 422, body
    async with gateway.runtime.services.sessions() as db:
        user = await db.scalar(select(User).where(User.id == user_id))
        assert user is not None
        assert (user.email, user.name) == ("ann@example.test", "Ann")


async def test_without_smtp_mail_waits_in_the_outbox(gateway: Gateway, db_url: str) -> None:
    """No SMTP configured: `gateway outbox` prints the message with its link on the configured origin."""
    await gateway.user("ann@example.test")
    assert (await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"}))[0] == 202

    async def queued() -> bool:
        async with gateway.runtime.services.sessions() as db:
            return await db.scalar(select(OutboxMessage.id)) is not None

    await eventually(queued, what="the reset (prepared after the response) never reached the outbox")
    out = run_cli(["outbox"], db_url)
    assert out.returncode == 0, out.stderr
    assert "To: ann@example.test" in out.stdout
    assert "Subject: Reset your password" in out.stdout
    assert "http://127.0.0.1:8080/reset-password?token=et_" in out.stdout


async def test_a_password_change_voids_older_reset_links(mailing: tuple[Gateway, Mailbox]) -> None:
    """A reset link sent before the password changed no longer works."""
    gateway, mailbox = mailing
    await gateway.user("ann@example.test")
    await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"})
    token = (await mailbox.wait_for("ann@example.test", "Reset your password")).token
    _, login = await _login(gateway, "ann@example.test")
    body = {"current_password": PASSWORD, "new_password": NEW}
    assert (await _post(gateway, "/auth/change-password", body, token=login["access_token"]))[0] == 200
    assert (await _post(gateway, "/auth/reset-password", {"token": token, "password": NEW + "!"}))[0] == 400


async def test_forgot_password_is_limited_per_account_and_per_ip(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """At most five reset emails per account per hour (then silently none), and a client IP over its budget
    gets 429."""
    await load_system_policy(db_url)
    async with mailing_gateway(db_url, upstream, tmp_path, login={"ip_failures_per_window": 8}) as (gateway, box):
        await gateway.user("ann@example.test")
        statuses = [(await _post(gateway, "/auth/forgot-password", {"email": "ann@example.test"}))[0] for _ in range(8)]
        assert statuses == [202] * 8
        await box.wait_for("ann@example.test", "Reset your password", count=5)
        # Nothing more is coming: every request has finished its work after the response (preparing a reset or
        # deciding not to), and the outbox holds nothing unsent.
        await gateway.settled()
        await eventually(lambda: _outbox_empty(gateway), what="the outbox was never drained")
        assert len(box.to("ann@example.test")) == 5
        assert (await _post(gateway, "/auth/forgot-password", {"email": "bob@example.test"}))[0] == 429
