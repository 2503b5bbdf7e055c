"""When PostgreSQL goes away: proxied decisions continue on the last policy, /readyz says 503, the API answers
503 with Retry-After (never a 500), and everything recovers when the database returns."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gateway.db.migrate import upgrade
from tests.conftest import (
    Upstream,
    _pg_exec,
    _postgres_admin_url,
    gateway_settings,
    load_system_policy,
    serving,
)
from tests.waiting import eventually


async def test_decisions_survive_the_database_going_away(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections refused by the server: proxied 200/403 as before, readiness 503, login 503; then back."""
    admin = _postgres_admin_url()
    name = "gw_down_" + secrets.token_hex(4)
    try:
        await _pg_exec(admin, f'CREATE DATABASE "{name}"')
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        await load_system_policy(url)
        settings = gateway_settings(url, upstream.url, audit_log=str(tmp_path / "a.jsonl"), policy_poll_seconds=0.2)
        async with serving(settings, upstream) as gateway:
            await gateway.org("acme")
            await gateway.user("dev@acme.test", org="acme", role="viewer")
            token = await gateway.login("dev@acme.test")
            await _pg_exec(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            terminate = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608 - a name we generated
            caplog.set_level(logging.ERROR, logger="gateway")
            await _pg_exec(admin, terminate)
            # The gateway has noticed: its listener lost the connection and a reload failed (it keeps serving the
            # snapshot it had).
            listener = gateway.runtime.services.listener
            assert listener is not None
            await eventually(lambda: not listener.connected, what="the listener never noticed its connection was gone")
            await eventually(
                lambda: "policy reload failed; keeping the previous policy" in caplog.text,
                what="no reload was attempted against the stopped database",
            )
            assert (await gateway.call("GET", "/api/x", token=token, org="acme"))[0] == 200
            assert (await gateway.call("DELETE", "/api/x", token=token, org="acme"))[0] == 403
            assert (await gateway.call("GET", "/readyz"))[0] == 503
            status, headers, _ = await gateway.call(
                "POST", "/auth/login", json={"email": "dev@acme.test", "password": "correct horse battery"}
            )
            assert status == 503
            assert headers["Retry-After"] == "5"
            await _pg_exec(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

            async def ready() -> bool:
                return (await gateway.call("GET", "/readyz"))[0] == 200

            await eventually(ready, within=10, every=0.1, what="/readyz never recovered")
            assert await gateway.login("dev@acme.test")
    finally:
        await _pg_exec(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
