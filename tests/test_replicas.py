"""Two gateway processes on one database: a change made through one is enforced by the other within a second.
On PostgreSQL by LISTEN/NOTIFY alone (polling is set to 30 s here), also after the listening connection is
killed; on SQLite by polling the version (every 0.2 s here)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from gateway.db.engine import create_engine, session_factory
from gateway.identity import accounts
from gateway.identity.passwords import PasswordHasher
from gateway.manage import members, orgs
from gateway.settings import Passwords
from tests.conftest import CLI, FAST_PASSWORDS, PASSWORD, ROOT, Upstream, closed_port, load_system_policy
from tests.waiting import eventually


@contextmanager
def _replica(db_url: str, upstream: Upstream, tmp_path: Path, name: str) -> Iterator[str]:
    port = closed_port()
    config = tmp_path / f"{name}.toml"
    poll = 30 if db_url.startswith("postgresql") else 0.2
    config.write_text(
        f'database_url = "{db_url}"\nmodel_path = "{ROOT / "model.conf"}"\naudit_log = "off"\n'
        f"policy_poll_seconds = {poll}\n"
        "[passwords]\nmemory_kib = 1024\ntime_cost = 1\nparallelism = 1\n"
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream.url}"\n'
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ["GATEWAY_CONFIG"] = str(config)
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _ready(http: aiohttp.ClientSession, base: str) -> None:
    """Until the replica answers /readyz and (on PostgreSQL) listens."""

    async def ready() -> bool:
        try:
            async with http.get(base + "/readyz") as r:
                return r.status == 200 and (await r.json())["listening"] is not False
        except aiohttp.ClientError:
            return False

    await eventually(ready, within=15, every=0.05, what=f"{base} never became ready and listening")


async def _seed(db_url: str) -> None:
    await load_system_policy(db_url)
    engine = create_engine(db_url)
    hasher = PasswordHasher(Passwords(**FAST_PASSWORDS))
    async with session_factory(engine)() as session:
        org = await orgs.create_org(session, CLI, slug="acme", name="Acme")
        user = await accounts.create_user(session, hasher, email="dev@acme.test", password=PASSWORD)
        await members.add_member(session, CLI, org, role="viewer", user_id=user.id)
        root = await accounts.create_user(session, hasher, email="root@acme.test", password=PASSWORD)
        await accounts.grant_superadmin(session, root)
        await session.commit()
    await engine.dispose()


async def _kill_listeners(db_url: str) -> int:
    url = make_url(db_url)
    connection = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, database=url.database)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gateway-listener'"
        )
    finally:
        await connection.close()
    return len(rows)


async def test_changes_reach_the_other_replica_within_a_second(
    database_url: str, db_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    """A role change through replica A is enforced by replica B in under a second; on PostgreSQL also after
    B's LISTEN connection is killed (B reconnects and resynchronises)."""
    postgres = database_url.startswith("postgresql")
    await _seed(db_url)
    with _replica(db_url, upstream, tmp_path, "a") as a, _replica(db_url, upstream, tmp_path, "b") as b:
        async with aiohttp.ClientSession() as http:
            await _ready(http, a)
            await _ready(http, b)

            async def login(email: str) -> str:
                async with http.post(a + "/auth/login", json={"email": email, "password": PASSWORD}) as r:
                    assert r.status == 200
                    token: str = (await r.json())["access_token"]
                    return token

            dev, root = await login("dev@acme.test"), await login("root@acme.test")
            async with http.get(a + "/admin/orgs/acme/members", headers={"Authorization": f"Bearer {root}"}) as r:
                dev_id = next(m["user_id"] for m in (await r.json())["items"] if m["email"] == "dev@acme.test")

            async def delete_status() -> int:
                headers = {"Authorization": f"Bearer {dev}", "X-Org": "acme"}
                async with http.delete(b + "/api/orders/1", headers=headers) as r:
                    return r.status

            async def set_role(role: str) -> None:
                url = f"{a}/admin/orgs/acme/members/{dev_id}"
                async with http.patch(url, json={"role": role}, headers={"Authorization": f"Bearer {root}"}) as r:
                    assert r.status == 200, await r.text()

            async def propagation(expected: int) -> float:
                started = time.perf_counter()
                while await delete_status() != expected:
                    assert time.perf_counter() - started < 5, "the change did not reach replica B"
                    await asyncio.sleep(0.01)
                return time.perf_counter() - started

            assert await propagation(403) < 5, (
                "B knows the signing key A issued with (both may create one at first start)"
            )
            await set_role("admin")
            assert await propagation(200) < 1.0
            if postgres:
                # A change made while B has no listener arrives by the full resync after B reconnects.
                assert await _kill_listeners(db_url) >= 2
                await set_role("member")
                assert await propagation(403) < 3.0
                await _ready(http, b)
                await set_role("admin")
                assert await propagation(200) < 1.0
            await set_role("viewer")
            assert await propagation(403) < 1.0
            async with http.get(b + "/readyz") as r:
                assert json.loads(await r.text())["listening"] is (True if postgres else None)
