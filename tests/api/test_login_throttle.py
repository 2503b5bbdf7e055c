"""Login throttling: per account (known or unknown, alike) and per client IP, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD, Gateway, Upstream, gateway_settings, serving


async def _login(gateway: Gateway, email: str, password: str, **headers: str) -> tuple[int, Any, bytes]:
    status, response_headers, body = await gateway.call(
        "POST", "/auth/login", json={"email": email, "password": password}, headers=headers
    )
    return status, response_headers, body


async def test_an_account_locks_after_repeated_failures_known_or_not(gateway: Gateway) -> None:
    """Five failures, then 429 with Retry-After even for the right password; an unknown email behaves the
    same; another account is unaffected."""
    await gateway.user("ann@example.test")
    await gateway.user("bob@example.test")
    answers: dict[str, list[tuple[int, str]]] = {}
    for email in ("ann@example.test", "nobody@example.test"):
        seen = []
        for _ in range(6):
            status, headers, body = await _login(gateway, email, "wrong password!")
            seen.append((status, json.loads(body)["type"]))
        answers[email] = seen
        status, headers, _ = await _login(gateway, email, PASSWORD)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
    assert answers["ann@example.test"] == answers["nobody@example.test"]
    assert [status for status, _ in answers["ann@example.test"]] == [401] * 5 + [429]
    assert (await _login(gateway, "bob@example.test", PASSWORD))[0] == 200


async def test_the_lock_ends_and_grows(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """After the lock the right password works and clears the count; failing again locks for longer."""
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "a.jsonl"),
        login={"free_failures": 2, "base_lock_seconds": 1, "max_lock_seconds": 4},
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        for _ in range(2):
            assert (await _login(gateway, "ann@example.test", "wrong password!"))[0] == 401
        status, headers, _ = await _login(gateway, "ann@example.test", PASSWORD)
        assert status == 429
        assert headers["Retry-After"] == "1"
        await asyncio.sleep(1.1)
        assert (await _login(gateway, "ann@example.test", "wrong password!"))[0] == 401
        status, headers, _ = await _login(gateway, "ann@example.test", PASSWORD)
        assert status == 429
        assert headers["Retry-After"] == "2", "the third failure in a row doubles the lock"
        await asyncio.sleep(2.1)
        assert (await _login(gateway, "ann@example.test", PASSWORD))[0] == 200
        assert (await _login(gateway, "ann@example.test", "wrong password!"))[0] == 401, "success cleared it"


async def test_one_ip_failing_on_many_accounts_is_locked(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """Spraying one password over many emails locks the client IP; a forged X-Forwarded-For changes nothing
    (no trusted proxies)."""
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), login={"ip_failures_per_window": 3}
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        for n in range(3):
            assert (await _login(gateway, f"user{n}@example.test", "Spring2026!"))[0] == 401
        assert (await _login(gateway, "ann@example.test", PASSWORD))[0] == 429
        assert (await _login(gateway, "ann@example.test", PASSWORD, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 429


async def test_a_completed_reset_lifts_the_accounts_lock(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """A locked-out user who completes a password reset (it proves the mailbox) signs in with the new password
    at once; one wrong attempt every few minutes can no longer keep an account locked for ever."""
    from tests.api.mailbox import mailing_gateway

    async with mailing_gateway(db_url, upstream, tmp_path) as (gateway, mailbox):
        await gateway.user("ann@example.test")
        for _ in range(6):
            await _login(gateway, "ann@example.test", "wrong password!")
        assert (await _login(gateway, "ann@example.test", PASSWORD))[0] == 429
        await gateway.call("POST", "/auth/forgot-password", json={"email": "ann@example.test"})
        link = await mailbox.wait_for("ann@example.test", "Reset your password")
        new = "violet tram overture"
        status, _, _ = await gateway.call("POST", "/auth/reset-password", json={"token": link.token, "password": new})
        assert status == 200
        assert (await _login(gateway, "ann@example.test", new))[0] == 200
