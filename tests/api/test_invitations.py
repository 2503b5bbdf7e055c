"""Invitations through real HTTP and a real SMTP server: invite, accept (with or without an account), decline,
revoke, expiry, single use, and the org setting that turns off direct adds."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.db.models import AuditRecord, Invitation
from tests.api.admin_helpers import World, build_world
from tests.api.mailbox import Mailbox, mailing_gateway
from tests.conftest import PASSWORD, Upstream, load_system_policy

NEW_PASSWORD = "lantern orchard velvet"


@pytest.fixture
async def world(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[tuple[World, Mailbox]]:
    await load_system_policy(db_url)
    async with mailing_gateway(db_url, upstream, tmp_path) as (gateway, mailbox):
        yield await build_world(gateway), mailbox


async def _auth(world: World, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    status, _, raw = await world.gateway.call("POST", "/auth/invitations/" + path, json=body, token=token)
    return status, json.loads(raw) if raw else None


async def _invite(world: World, mailbox: Mailbox, email: str, role: str = "member", who: str = "admin") -> str:
    before = len(mailbox.to(email))
    status, view, _ = await world.call(who, "POST", "/admin/orgs/acme/invitations", {"email": email, "role": role})
    assert status == 201, view
    assert (view["email"], view["role"], view["status"]) == (email.lower(), role, "pending")
    mail = await mailbox.wait_for(email.lower(), "invited to join", count=before + 1)
    return mail.token


async def test_a_new_person_accepts_once_and_signs_in(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    token = await _invite(w, mailbox, "Newcomer@Example.test")
    assert (await _auth(w, "lookup", {"token": token}))[1]["org"] == "acme"
    status, problem = await _auth(w, "accept", {"token": token})
    assert status == 422 and "password" in problem["detail"], "no account and no password: nothing is created"
    status, accepted = await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD, "name": "New Comer"})
    assert status == 200, accepted
    assert (accepted["org"], accepted["role"]) == ("acme", "member")
    assert (await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD}))[0] == 400, "single use"
    assert (await _auth(w, "lookup", {"token": token}))[0] == 400

    newcomer = await w.gateway.login("newcomer@example.test", NEW_PASSWORD)
    status, _, raw = await w.gateway.call("GET", "/admin/orgs/acme", token=newcomer)
    assert (status, json.loads(raw)["slug"]) == (200, "acme"), "the new member reads the org at once"
    status, page, _ = await w.call("admin", "GET", "/admin/orgs/acme/invitations")
    assert (status, page["items"]) == (200, [])
    status, page, _ = await w.call("admin", "GET", "/admin/orgs/acme/invitations?status=accepted")
    assert [item["accepted_by"] for item in page["items"]] == [accepted["user_id"]]
    async with w.gateway.runtime.services.sessions() as db:
        actions = list(await db.scalars(select(AuditRecord.action).where(AuditRecord.action.like("invitation.%"))))
    assert sorted(actions) == ["invitation.accept", "invitation.create"]


async def test_an_existing_account_accepts_only_as_itself(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    token = await _invite(w, mailbox, "outsider@globex.test", role="viewer")
    status, problem = await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD})
    assert (status, "sign in" in problem["detail"]) == (403, True), "an account exists: no second one, no password set"
    assert (await _auth(w, "accept", {"token": token}, token=w.tokens["viewer"]))[0] == 403, "another person"
    status, accepted = await _auth(w, "accept", {"token": token}, token=w.tokens["outsider"])
    assert (status, accepted["user_id"], accepted["role"]) == (200, w.ids["outsider"], "viewer")
    assert (await w.call("outsider", "GET", "/admin/orgs/acme/members"))[0] == 200
    assert await w.gateway.login("outsider@globex.test", PASSWORD), "their password is unchanged"


async def test_declined_revoked_replaced_and_expired_links_are_dead(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    declined = await _invite(w, mailbox, "a@example.test")
    assert (await _auth(w, "decline", {"token": declined}))[0] == 200
    assert (await _auth(w, "accept", {"token": declined, "password": NEW_PASSWORD}))[0] == 400
    assert (await _auth(w, "decline", {"token": declined}))[0] == 400

    first = await _invite(w, mailbox, "b@example.test")
    second = await _invite(w, mailbox, "b@example.test", role="viewer")
    assert (await _auth(w, "lookup", {"token": first}))[0] == 400, "a newer invitation replaces the older"
    status, pending, _ = await w.call("admin", "GET", "/admin/orgs/acme/invitations")
    assert [(item["email"], item["role"]) for item in pending["items"]] == [("b@example.test", "viewer")]
    assert (await w.call("admin", "DELETE", f"/admin/orgs/acme/invitations/{pending['items'][0]['id']}"))[0] == 204
    assert (await _auth(w, "accept", {"token": second, "password": NEW_PASSWORD}))[0] == 400
    assert (await w.call("admin", "DELETE", f"/admin/orgs/acme/invitations/{pending['items'][0]['id']}"))[0] == 404

    late = await _invite(w, mailbox, "c@example.test")
    async with w.gateway.runtime.services.sessions() as db:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await db.execute(update(Invitation).where(Invitation.email == "c@example.test").values(expires_at=past))
        await db.commit()
    assert (await _auth(w, "accept", {"token": late, "password": NEW_PASSWORD}))[0] == 400
    status, expired, _ = await w.call("admin", "GET", "/admin/orgs/acme/invitations?status=expired")
    assert status == 200
    assert [item["email"] for item in expired["items"]] == ["c@example.test"]
    assert (await _auth(w, "accept", {"token": "inv_" + "x" * 43, "password": NEW_PASSWORD}))[0] == 400
    assert (await _auth(w, "accept", {"token": "", "password": NEW_PASSWORD}))[0] == 400


async def test_invitations_follow_the_rules_of_adding_members(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    body = {"email": "boss@example.test", "role": "owner"}
    assert (await w.call("admin", "POST", "/admin/orgs/acme/invitations", body))[0] == 403, "owner takes an owner"
    assert (await w.call("member", "POST", "/admin/orgs/acme/invitations", body))[0] == 403
    assert (await w.call("outsider", "POST", "/admin/orgs/acme/invitations", body))[0] == 403
    status, problem, _ = await w.call("admin", "POST", "/admin/orgs/acme/invitations", {**body, "role": "nope"})
    assert status == 422
    status, problem, _ = await w.call(
        "admin", "POST", "/admin/orgs/acme/invitations", {"email": "viewer@acme.test", "role": "member"}
    )
    assert status == 409, "already a member"
    status, problem, _ = await w.call(
        "admin",
        "POST",
        "/admin/orgs/acme/invitations",
        {"email": "x@example.test", "role": "viewer", "expires_in_days": 31},
    )
    assert (status, problem["detail"].split(":")[0]) == (422, "expires_in_days")
    token = await _invite(w, mailbox, "boss@example.test", role="owner", who="owner")
    status, accepted = await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD})
    assert (status, accepted["role"]) == (200, "owner")


async def test_an_org_can_take_members_by_invitation_only(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    status, org, _ = await w.call("admin", "PATCH", "/admin/orgs/acme", {"direct_add": False})
    assert (status, org["direct_add"]) == (200, False)
    status, problem, _ = await w.call(
        "admin", "POST", "/admin/orgs/acme/members", {"email": "outsider@globex.test", "role": "viewer"}
    )
    assert status == 409 and "invitation" in problem["detail"]
    token = await _invite(w, mailbox, "outsider@globex.test", role="viewer")
    assert (await _auth(w, "accept", {"token": token}, token=w.tokens["outsider"]))[0] == 200


async def test_an_invitation_needs_room_and_an_open_org(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    token = await _invite(w, mailbox, "late@example.test")
    assert (await w.call("admin", "PATCH", "/admin/orgs/acme", {"max_members": 4}))[0] == 200
    status, problem = await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD})
    assert (status, "limit" in problem["detail"]) == (409, True), "the org filled up meanwhile: nothing is created"
    async with w.gateway.runtime.services.sessions() as db:
        row = await db.scalar(select(Invitation).where(Invitation.email == "late@example.test"))
        assert row is not None and row.accepted_at is None
    assert (await w.call("admin", "PATCH", "/admin/orgs/acme", {"max_members": 0}))[0] == 200
    assert (await w.call("owner", "POST", "/admin/orgs/acme/archive"))[0] == 200
    assert (await _auth(w, "lookup", {"token": token}))[0] == 400, "an archived org takes nobody"


async def test_an_owner_invitation_needs_its_sender_to_still_be_an_owner(world: tuple[World, Mailbox]) -> None:
    w, mailbox = world
    token = await _invite(w, mailbox, "heir@example.test", role="owner", who="owner")
    status, _, _ = await w.call("owner", "POST", "/admin/orgs/acme/transfer", {"to": w.ids["admin"]})
    assert status == 200, "the inviter hands the org over and keeps admin"
    status, problem = await _auth(w, "accept", {"token": token, "password": NEW_PASSWORD})
    assert (status, "can no longer grant owner" in problem["detail"]) == (409, True)
    assert (await _auth(w, "lookup", {"token": token}))[0] == 200, "nothing was spent: a new owner may resend"
