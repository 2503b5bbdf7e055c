"""A real database outage: a PostgreSQL server this test starts, then stops while the gateway serves.

Every way the API can meet the stopped server (login, refresh, /auth/me, /admin, /readyz) answers 503 with
Retry-After, never a 500; proxied requests go on from the last snapshot; when the server is back, so is the
API. A refused connection to a port nobody listens on is answered the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.db.engine import create_engine, session_factory
from gateway.manage import orgs
from gateway.policy.store import migrate
from tests.conftest import CLI, PASSWORD, Gateway, Upstream, closed_port, gateway_settings, serving
from tests.waiting import eventually


def _binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_postgres(*command: str) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user when we are root."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class PrivateServer:
    """A throw-away PostgreSQL cluster in a temporary folder, on its own port."""

    def __init__(self, bin_dir: Path, folder: Path) -> None:
        self.bin_dir = bin_dir
        self.data = folder / "data"
        self.port = closed_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(*args), check=True, capture_output=True, timeout=60)  # noqa: S603

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.data.parent, "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")  # the server must not hold our pipes open
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    bin_dir = _binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are required in CI")
        pytest.skip("PostgreSQL server binaries not installed")
    # Not under pytest's folders: those are private to root, and the server runs as the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    server = PrivateServer(bin_dir, folder)
    try:
        server.init()
        server.start()
        yield server
    finally:
        subprocess.run(  # noqa: S603
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def on_private(private_server: PrivateServer, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway on the private server, with acme, a viewer and a superadmin."""
    await asyncio.to_thread(migrate, private_server.url)
    engine = create_engine(private_server.url)
    async with session_factory(engine)() as session:
        await orgs.create_org(session, CLI, slug="acme", name="Acme")
        await session.commit()
    await engine.dispose()
    settings = gateway_settings(private_server.url, upstream.url, audit_log="off", policy_poll_seconds=0.5)
    async with serving(settings, upstream) as gateway:
        await gateway.user("v@acme.test", org="acme", role="viewer")
        await gateway.user("root@acme.test", superadmin=True)
        yield gateway


async def test_a_stopped_database_is_503_with_retry_after_and_proxying_goes_on(
    private_server: PrivateServer, on_private: Gateway
) -> None:
    """Stop the server: login, refresh, /auth/me, /admin and /readyz are 503 with Retry-After (never 500);
    proxied requests are still decided; start it again: the API answers again."""
    gateway = on_private
    async with gateway.http.post(
        gateway.url + "/auth/login", json={"email": "v@acme.test", "password": PASSWORD}
    ) as response:
        tokens = await response.json()
    root = await gateway.login("root@acme.test")
    await asyncio.to_thread(private_server.stop)

    async def status(method: str, path: str, **options: object) -> tuple[int, str | None]:
        async with gateway.http.request(method, gateway.url + path, **options) as response:  # type: ignore[arg-type]
            return response.status, response.headers.get("Retry-After")

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    admin = {"Authorization": f"Bearer {root}"}
    for method, path, options in (
        ("POST", "/auth/login", {"json": {"email": "v@acme.test", "password": PASSWORD}}),
        ("POST", "/auth/refresh", {"json": {"refresh_token": tokens["refresh_token"]}}),
        ("GET", "/auth/me", {"headers": bearer}),
        ("GET", "/auth/sessions", {"headers": bearer}),
        ("GET", "/admin/orgs/acme/members", {"headers": admin}),
        ("POST", "/admin/orgs", {"headers": admin, "json": {"slug": "globex", "name": "Globex"}}),
    ):
        got, retry = await status(method, path, **options)
        assert (got, retry) == (503, "5"), (method, path, got)
    assert (await status("GET", "/readyz"))[0] == 503
    assert (await status("GET", "/api/x", headers={**bearer, "X-Org": "acme"}))[0] == 200, "decisions go on"

    await asyncio.to_thread(private_server.start)

    async def answering() -> bool:
        return (await status("GET", "/auth/me", headers=bearer))[0] == 200

    await eventually(answering, within=10, every=0.1, what="the API never answered again")
    assert (await status("GET", "/readyz"))[0] == 200


async def test_a_refused_connection_is_503_not_500(upstream: Upstream, tmp_path: Path) -> None:
    """A database whose port refuses connections (a bare OSError from the driver) is 503, not 500."""
    database = tmp_path / "gateway.db"
    await asyncio.to_thread(migrate, f"sqlite+aiosqlite:///{database}")
    settings = gateway_settings(f"sqlite+aiosqlite:///{database}", upstream.url, audit_log="off")
    async with serving(settings, upstream) as gateway:
        gateway.runtime.services.sessions = session_factory(
            create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{closed_port()}/none")
        )
        async with gateway.http.post(
            gateway.url + "/auth/login", json={"email": "v@acme.test", "password": PASSWORD}
        ) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
