"""A login storm meets a bounded hashing queue: beyond it, 503 + Retry-After at once, the same for every email,
with no Argon2 run and no database statement; the login throttle still answers first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tests.conftest import FAST_PASSWORDS, PASSWORD, Gateway, Upstream, gateway_settings, serving


@contextlib.asynccontextmanager
async def _saturated(gateway: Gateway) -> AsyncIterator[None]:
    """Take the gateway's one hashing slot (max_concurrent 1, no queue) until the block ends."""
    gate = gateway.runtime.hasher.gate
    release = threading.Event()

    async def hold() -> None:
        with gate.admit():
            await gate.run(release.wait, 10)

    holder = asyncio.create_task(hold())
    for _ in range(200):
        if gate.running:
            break
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        release.set()
        await holder


BACKGROUND_READS = ("SELECT state_version.version", "SELECT state_changes.", "SELECT signing_keys.")


async def _login(gateway: Gateway, email: str, password: str) -> tuple[int, Any, bytes, float]:
    started = time.perf_counter()
    status, headers, body = await gateway.call("POST", "/auth/login", json={"email": email, "password": password})
    return status, headers, body, time.perf_counter() - started


async def test_a_saturated_hasher_sheds_logins_alike_without_hashing_or_lookups(
    db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    passwords = {**FAST_PASSWORDS, "max_concurrent": 1, "queue": 0}
    settings = gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), passwords=passwords)
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        gate = gateway.runtime.hasher.gate
        statements: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            # The policy watcher's poll (every 0.2 s here) reads the state version whatever logins do, and a
            # change it catches up with (PostgreSQL's notice of the user made above may come late) reads the
            # change log and then the signing keys: background work, never a login's.
            if not statement.startswith(BACKGROUND_READS):
                statements.append(statement)

        engine = gateway.runtime.services.db.sync_engine
        async with _saturated(gateway):
            runs_before = gate.runs
            event.listen(engine, "before_cursor_execute", count)
            try:
                answers = {
                    email: [await _login(gateway, email, password) for _ in range(10)]
                    for email, password in (
                        ("ann@example.test", PASSWORD),
                        ("ann@example.test", "wrong password!"),
                        ("nobody@example.test", "wrong password!"),
                    )
                }
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert gate.runs == runs_before, "a shed login costs no Argon2 run"
        assert statements == [], "nor any database work"
        bodies = set()
        for email, seen in answers.items():
            for status, headers, body, _ in seen:
                assert status == 503, email
                assert headers["Retry-After"] == "1"
                assert headers["Content-Type"] == "application/problem+json"
                bodies.add(body)
        assert len(bodies) == 1, "the same answer for a known email, a wrong password and an unknown email"
        assert json.loads(bodies.pop())["type"] == "urn:gateway:problem:busy"
        known = statistics.median(elapsed for *_, elapsed in answers["ann@example.test"])
        unknown = statistics.median(elapsed for *_, elapsed in answers["nobody@example.test"])
        assert 0.33 < unknown / known < 3, (known, unknown)
        assert gate.shed == 30
        # Once the slot is free again, logins go through, and /metrics shows what happened.
        assert (await _login(gateway, "ann@example.test", PASSWORD))[0] == 200
        assert gate.runs == runs_before + 1
        status, _, metrics = await gateway.call("GET", "/metrics")
        assert status == 200
        assert b"gateway_password_hashes_shed_total 30.0" in metrics
        assert b"gateway_password_hashes_in_flight 0.0" in metrics
        assert b"gateway_password_hashing_allowance_cpus " in metrics


async def test_the_login_throttle_answers_before_the_queue(db_url: str, upstream: Upstream, tmp_path: Path) -> None:
    """A locked account gets 429 even while hashing is saturated: the cheaper refusal comes first."""
    passwords = {**FAST_PASSWORDS, "max_concurrent": 1, "queue": 0}
    settings = gateway_settings(
        db_url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), passwords=passwords, login={"free_failures": 1}
    )
    async with serving(settings, upstream) as gateway:
        await gateway.user("ann@example.test")
        assert (await _login(gateway, "ann@example.test", "wrong password!"))[0] == 401
        async with _saturated(gateway):
            assert (await _login(gateway, "ann@example.test", PASSWORD))[0] == 429
            assert (await _login(gateway, "bob@example.test", PASSWORD))[0] == 503
