"""Real seams for every test: SQLite and PostgreSQL databases, a recording upstream, a gateway on a real port."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import uvicorn
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from multidict import CIMultiDict
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from yarl import URL

from gateway.asgi import FrontDoor, create_gateway
from gateway.asgitypes import Receive, Scope, Send
from gateway.cli import main
from gateway.db.engine import create_engine, session_factory
from gateway.db.migrate import upgrade
from gateway.db.models import (
    ApiKey,
    AuditChain,
    AuditCheckpoint,
    AuditDelivery,
    AuditRecord,
    BootstrapToken,
    Invitation,
    LoginState,
    Membership,
    Organization,
    OutboxMessage,
    PolicyRule,
    PolicyVersion,
    RefreshToken,
    Role,
    Session,
    ShadowDifference,
    ShadowPolicy,
    SigningKey,
    StateChange,
    User,
)
from gateway.identity import accounts, apikeys
from gateway.identity.tokens import KeyRing, TokenService
from gateway.manage import keys, members, orgs
from gateway.manage.common import Actor, find_org
from gateway.policy import OrgRef, Rule, StateRows
from gateway.policy.rules import parse_files
from gateway.policy.store import PolicyStore, add_rules
from gateway.runtime import Runtime
from gateway.serve import StrictHttpToolsProtocol
from gateway.settings import SHIPPED_POLICY, Settings, settings_from_mapping
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
# Cheap Argon2 for tests; the production default is checked in tests/identity.
FAST_PASSWORDS = {"memory_kib": 1024, "time_cost": 1, "parallelism": 1}
PASSWORD = "correct horse battery"
CLI = Actor(subject="cli:tests")


def _postgres_admin_url() -> str:
    return os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def _pg_exec(url: str, statement: str) -> None:
    parts = make_url(url)
    connection = await asyncpg.connect(
        host=parts.host,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        database=parts.database,
        timeout=5,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database of each kind for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
        upgrade(url)
        yield url
        return
    admin = _postgres_admin_url()
    name = "gw_test_" + secrets.token_hex(6)
    try:
        asyncio.run(_pg_exec(admin, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {admin} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {admin} (set GATEWAY_TEST_POSTGRES_URL): {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty(url: str) -> None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            for model in (
                LoginState,
                RefreshToken,
                Session,
                ApiKey,
                AuditRecord,
                AuditDelivery,
                AuditChain,
                AuditCheckpoint,
                ShadowDifference,
                ShadowPolicy,
                Invitation,
                PolicyVersion,
                Membership,
                PolicyRule,
                Role,
                User,
                Organization,
                SigningKey,
                OutboxMessage,
                BootstrapToken,
                StateChange,
            ):
                await session.execute(delete(model))
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture
async def db_url(database_url: str) -> str:
    """The session database, emptied for this test."""
    await _empty(database_url)
    return database_url


# -- the recording upstream -----------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class Upstream:
    url: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def last(self) -> Seen:
        return self.seen[-1]


async def _upstream_websocket(upstream: Upstream, request: web.Request) -> web.WebSocketResponse:
    """Echo every message back, prefixed with `echo:`."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    upstream.seen.append(Seen("WEBSOCKET", request.raw_path, headers, b""))
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type == aiohttp.WSMsgType.TEXT:
            await socket.send_str("echo:" + message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await socket.send_bytes(b"echo:" + message.data)
    return socket


async def _upstream_handler(upstream: Upstream, request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _upstream_websocket(upstream, request)
    body = await request.read()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    upstream.seen.append(Seen(request.method, request.raw_path, headers, body))
    tail = request.raw_path.split("?", 1)[0]
    if tail.endswith("/slow"):
        await asyncio.sleep(2)
    if "/sleep/" in tail:  # /sleep/<seconds>
        await asyncio.sleep(float(tail.rsplit("/", 1)[1]))
    if "/download/" in tail:
        size = int(tail.rsplit("/", 1)[1])
        response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        await response.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response
    return web.json_response(
        {"method": request.method, "path": request.raw_path, "bytes": len(body)},
        headers={"x-upstream": "yes", "connection": "x-secret-hop", "x-secret-hop": "1", "keep-alive": "5"},
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A real HTTP server on an ephemeral port that records every request it receives."""
    recorder = Upstream(url="")
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", functools.partial(_upstream_handler, recorder))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recorder.url = f"http://127.0.0.1:{port}"
    yield recorder
    await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the gateway ----------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """A running gateway and helpers to seed it and call it."""

    url: str
    http: aiohttp.ClientSession
    runtime: Runtime
    upstream: Upstream

    front: FrontDoor | None = None
    server: uvicorn.Server | None = None

    async def settled(self, within: float = 5.0) -> None:
        """Until no request is in flight in the server, background work after a response (a Litestar
        BackgroundTask, such as preparing a reset email) included: uvicorn holds each request's task until the
        application returns."""
        server = self.server
        assert server is not None, "a Gateway made by serving() or the gateway fixture"
        await eventually(lambda: not server.server_state.tasks, within=within, what="requests still in flight")

    def control_routes(self) -> list[Any]:
        """The routes of the control plane's Litestar application."""
        assert self.front is not None
        control = self.front.control
        assert isinstance(control, Litestar)
        return list(control.routes)

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit line written so far."""
        self.runtime.services.audit.flush()
        path = Path(self.runtime.settings.audit_log)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def user(
        self,
        email: str,
        *,
        org: str | None = None,
        role: str | None = None,
        superadmin: bool = False,
        password: str = PASSWORD,
    ) -> str:
        async with self.runtime.services.sessions() as session:
            user = await accounts.create_user(session, self.runtime.hasher, email=email, password=password)
            if superadmin:
                await accounts.grant_superadmin(session, user)
            await session.commit()
        if org and role:
            await self.member(org, email, role)
        await self.runtime.refresh()
        return user.id

    async def org(self, slug: str, name: str | None = None) -> None:
        async with self.runtime.services.sessions() as session:
            await orgs.create_org(session, CLI, slug=slug, name=name or slug.title())
            await session.commit()
        await self.runtime.refresh()

    async def member(self, org: str, email: str, role: str) -> None:
        async with self.runtime.services.sessions() as session:
            found = await find_org(session, org)
            await members.set_role(session, CLI, found, await members.find_user(session, email=email), role)
            await session.commit()
        await self.runtime.refresh()

    async def key(self, org: str, email: str, name: str = "ci", **options: Any) -> str:
        """A new API key for the member `email` of `org` (as `gateway keys create` makes it)."""
        async with self.runtime.services.sessions() as session:
            found = await find_org(session, org)
            user = await members.find_user(session, email=email)
            key, _ = await keys.create_key(session, CLI, found, user, name=name, **options)
            await session.commit()
        await self.runtime.refresh()
        return key

    async def revoke(self, key: str) -> None:
        async with self.runtime.services.sessions() as session:
            key_id = apikeys.parse(key)
            await keys.revoke_key(session, CLI, await keys.org_of_key(session, key_id), key_id)
            await session.commit()
        await self.runtime.refresh()

    async def login(self, email: str, password: str = PASSWORD) -> str:
        async with self.http.post(self.url + "/auth/login", json={"email": email, "password": password}) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["access_token"]
            return token

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        org: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if org:
            sent["X-Org"] = org
        # encoded=True: send the path byte for byte, without the client's own normalisation.
        target = URL(self.url + path, encoded=True)
        async with self.http.request(method, target, headers=sent, **kwargs) as response:
            return response.status, response.headers.copy(), await response.read()


def gateway_settings(db_url: str, upstream_url: str, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "database_url": db_url,
        "model_path": str(ROOT / "model.conf"),
        "policy_poll_seconds": 0.2,
        "passwords": FAST_PASSWORDS,
        "routes": [
            {"prefix": "/api", "upstream": upstream_url},
            {"prefix": "/orgs", "upstream": upstream_url, "org_from": "path"},
            {"prefix": "/public", "upstream": upstream_url, "public": True},
            {"prefix": "/stripped", "upstream": upstream_url + "/base", "strip_prefix": True},
            {"prefix": "/down", "upstream": f"http://127.0.0.1:{closed_port()}"},
            {"prefix": "/api/slowish", "upstream": upstream_url, "read_timeout": 0.5},
            {"prefix": "/api/small", "upstream": upstream_url, "max_body_bytes": 1000},
            {"prefix": "/signed", "upstream": upstream_url, "identity_token": True},
            {"prefix": "/pooled", "upstream": upstream_url, "pool_size": 1},
            {
                "prefix": "/cors",
                "upstream": upstream_url,
                "cors": {"allow_origins": ["https://app.example"], "allow_credentials": True},
            },
        ],
    }
    raw.update(overrides)
    return settings_from_mapping(raw)


async def start_gateway(
    app: FrontDoor, *, also: tuple[socket.socket, ...] = (), sock: socket.socket | None = None
) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    """Serve the gateway with uvicorn on an ephemeral port in this event loop (or on `sock`, bound beforehand when
    the settings must name the gateway's own URL), and on the bound sockets `also`, such as a management
    listener's."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        http=StrictHttpToolsProtocol,
        timeout_keep_alive=app.runtime.settings.clients.keep_alive_timeout,
    )
    config.clients = app.runtime.settings.clients  # type: ignore[attr-defined]  # as GatewayConfig carries them
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock, *also]))
    await eventually(lambda: server.started or task.done(), what="uvicorn never started")
    if task.done():
        task.result()
    assert server.started, "gateway did not start"
    return f"http://127.0.0.1:{port}", server, task


async def load_system_policy(db_url: str) -> None:
    """Store policies/*.csv, as `gateway policy load` does."""
    engine = create_engine(db_url)
    async with session_factory(engine)() as session:
        await add_rules(session, parse_files(sorted((ROOT / "policies").glob("*.csv"))))
        await session.commit()
    await engine.dispose()


@asynccontextmanager
async def serving(
    settings: Settings, upstream: Upstream, *, sock: socket.socket | None = None
) -> AsyncIterator[Gateway]:
    """Another gateway with these settings on its own port (or the bound `sock`), stopped afterwards."""
    front = create_gateway(settings)
    url, server, task = await start_gateway(front, sock=sock)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(url=url, http=http, runtime=front.runtime, upstream=upstream, front=front, server=server)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def gateway(db_url: str, upstream: Upstream, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway serving on a real port in front of the recording upstream, system policies loaded."""
    settings = gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"))
    await load_system_policy(db_url)
    front = create_gateway(settings)
    url, server, task = await start_gateway(front)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        yield Gateway(url=url, http=http, runtime=front.runtime, upstream=upstream, front=front, server=server)
    server.should_exit = True
    await task


def run_cli(args: list[str], db_url: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """Run `gateway ARGS` in the repository root against `db_url`, with cheap Argon2."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ.update(
        {
            "GATEWAY_DATABASE_URL": db_url,
            "GATEWAY_PASSWORDS__MEMORY_KIB": "1024",
            "GATEWAY_PASSWORDS__TIME_COST": "1",
            **env,
        }
    )
    return subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=60,
        check=False,
    )


# -- the data plane without a database ------------------------------------------------------------------------

BARE_DATABASE_URL = "sqlite+aiosqlite:////nonexistent/the-bare-data-plane-has-no-database.db"
"""Settings and Services need a database URL; the bare data plane never opens it (its folder does not exist)."""
BARE_USERS = {
    "owner": ("00000000-0000-4000-8000-000000000001", "acme", "owner"),
    "admin": ("00000000-0000-4000-8000-000000000002", "acme", "admin"),
    "member": ("00000000-0000-4000-8000-000000000003", "acme", "member"),
    "viewer": ("00000000-0000-4000-8000-000000000004", "acme", "viewer"),
    "carol": ("00000000-0000-4000-8000-000000000005", "globex", "owner"),
    "root": ("00000000-0000-4000-8000-000000000006", "*", "superadmin"),
}
"""The people `_acme` makes in the database tests, as the policy snapshot sees them: name -> (id, org, role)."""


@dataclass
class BareGateway(Gateway):
    """The real front door and pipeline over an in-memory policy snapshot: no database, no control plane (a
    request for /auth, /admin... fails the test). `tokens` holds an access token for each of BARE_USERS."""

    tokens: dict[str, str] = field(default_factory=dict)

    def ids(self, name: str) -> str:
        return BARE_USERS[name][0]

    def install(self, *extra: Rule) -> None:
        """Serve the system roles, the BARE_USERS memberships and `extra` lines, as a reload would."""
        self.runtime.state.install(_bare_state(extra, version=self.runtime.state.version + 1))


def _bare_state(extra: tuple[Rule, ...], *, version: int) -> StateRows:
    rules = [*parse_files([SHIPPED_POLICY]), *extra]
    rules += [Rule("g", ("user:" + user_id, role, org)) for user_id, org, role in BARE_USERS.values()]
    orgs = (OrgRef(id="org-acme", slug="acme"), OrgRef(id="org-globex", slug="globex"))
    return StateRows(rules=tuple(rules), orgs=orgs, version=version)


async def _no_control_plane(scope: Scope, receive: Receive, send: Send) -> None:
    """The lifespan (nothing to start: the bare runtime is built already); any other call is a test mistake."""
    if scope["type"] != "lifespan":
        raise AssertionError(f"the bare data plane has no control plane: {scope.get('path')!r}")
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def bare_runtime(settings: Settings) -> Runtime:
    """What Runtime.start builds, minus every use of the database: signing keys made here (not loaded), the policy
    snapshot installed from memory (not read), no watcher, listener, key-usage writer or mailer running. Services
    needs an engine: it points at a file in a folder that does not exist, so a query would fail loudly."""
    runtime = Runtime.configure(settings)
    key = Ed25519PrivateKey.generate()
    ring = KeyRing(active_kid="bare", private_keys={"bare": key}, public_keys={"bare": key.public_key()})
    tokens = TokenService(settings.tokens, ring)
    runtime.state.install(_bare_state((), version=1))
    db = create_engine(BARE_DATABASE_URL)
    runtime._services = runtime.assemble(db, PolicyStore(session_factory(db)), tokens, None)
    return runtime


async def _close_bare(runtime: Runtime) -> None:
    await runtime.services.close()


@asynccontextmanager
async def bare_serving(upstream: Upstream, tmp_path: Path, **overrides: Any) -> AsyncIterator[BareGateway]:
    """A bare data plane (see BareGateway) on its own port, with gateway_settings' routes unless `overrides`
    say otherwise; stopped afterwards."""
    overrides.setdefault("audit_log", str(tmp_path / "audit.jsonl"))
    runtime = bare_runtime(gateway_settings(BARE_DATABASE_URL, upstream.url, **overrides))
    front = FrontDoor(runtime=runtime, control=_no_control_plane)
    try:
        url, server, task = await start_gateway(front)
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as http:
                gateway = BareGateway(
                    url=url, http=http, runtime=runtime, upstream=upstream, front=front, server=server
                )
                issue = runtime.services.tokens.issue_access_token
                for name, (user_id, _, _) in BARE_USERS.items():
                    gateway.tokens[name] = issue(user_id, session_id=f"session-{name}")[0]
                yield gateway
        finally:
            server.should_exit = True
            await task
    finally:
        await _close_bare(runtime)


@pytest.fixture
async def bare(upstream: Upstream, tmp_path: Path) -> AsyncIterator[BareGateway]:
    """The data plane in front of the recording upstream, without a database: for tests of what a request goes
    through (match, headers, forwarding, CORS, paths) that the stored policy has no part in. Runs once, not per
    database."""
    async with bare_serving(upstream, tmp_path) as gateway:
        yield gateway


@dataclass
class Done:
    """What a CLI command run in this process printed and returned."""

    returncode: int
    stdout: str
    stderr: str


InProcessCli = Callable[[list[str], str], Done]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcessCli:
    """`gateway ARGS` against `db_url` in this process (the same `main` as the installed command, with cheap
    Argon2; a subprocess per call would cost a second of imports each)."""

    def run(args: list[str], db_url: str) -> Done:
        for name in [name for name in os.environ if name.startswith("GATEWAY_")]:  # as run_cli: only these
            monkeypatch.delenv(name)
        monkeypatch.setenv("GATEWAY_DATABASE_URL", db_url)
        monkeypatch.setenv("GATEWAY_PASSWORDS__MEMORY_KIB", "1024")
        monkeypatch.setenv("GATEWAY_PASSWORDS__TIME_COST", "1")

        def command() -> int:
            try:
                return main(args)
            except SystemExit as exit_:  # as the installed command would exit
                return int(exit_.code or 0)

        with ThreadPoolExecutor(1) as pool:  # its own thread: main() runs an event loop, and async tests have one
            code = pool.submit(command).result()
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return run
