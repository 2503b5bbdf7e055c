"""`gateway serve` as a process: workers, a killed worker replaced, SIGTERM drains and exits 0, start-up
failures in one line, restarts, readiness."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from gateway.asgi import create_gateway
from gateway.db.engine import create_engine, session_factory
from gateway.policy.store import migrate
from tests.conftest import ROOT, BareGateway, Gateway, Upstream, closed_port, gateway_settings, start_gateway
from tests.waiting import eventually, eventually_blocking


def _environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ.update(extra)
    return environ


@contextmanager
def _serving(config: Path, *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`gateway serve --config CONFIG ARGS` on a free port, killed (with its workers) if the test did not stop it."""
    port = closed_port()
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port), *args],
        cwd=ROOT,
        env=_environ(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the clean-up reaches the workers too
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def _ready(process: subprocess.Popen[bytes], base: str) -> None:
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            try:
                async with http.get(base + "/readyz") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode() if process.stderr else "serve exited")
            return False

        await eventually(ready, within=30, every=0.1, what="serve did not become ready")


def _workers(parent: int) -> set[int]:
    """The uvicorn worker processes of `parent` (not multiprocessing's resource tracker)."""
    found = set()
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:
            found.add(int(child))
    return found


async def _config(tmp_path: Path, upstream: Upstream) -> Path:
    """A migrated SQLite database and a config whose /open route is public (its /slow path takes 2 s)."""
    database = tmp_path / "gateway.db"
    await asyncio.to_thread(migrate, f"sqlite+aiosqlite:///{database}")
    config = tmp_path / "gateway.toml"
    config.write_text(
        'database_url = "sqlite+aiosqlite:///gateway.db"\naudit_log = "off"\nshutdown_grace_seconds = 10\n'
        "[passwords]\nmemory_kib = 1024\ntime_cost = 1\nparallelism = 1\n"
        f'[[routes]]\nprefix = "/open"\nupstream = "{upstream.url}"\npublic = true\n'
    )
    return config


async def _drained(process: subprocess.Popen[bytes], base: str, upstream: Upstream) -> None:
    """SIGTERM while a 4-second request is in flight: new connections are soon refused, the request completes,
    the process exits 0."""
    async with aiohttp.ClientSession() as http:
        before = len(upstream.seen)
        slow = asyncio.create_task(http.get(base + "/open/sleep/4"))
        # The request has reached a worker, which now waits for the upstream.
        await eventually(
            lambda: any(seen.raw_path == "/open/sleep/4" for seen in upstream.seen[before:]),
            what="the slow request never reached the upstream",
        )
        process.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                async with aiohttp.ClientSession() as fresh, fresh.get(base + "/healthz"):
                    return False
            except aiohttp.ClientConnectionError:
                return True

        # The supervisor looks at signals twice a second.
        await eventually(refused, within=2.5, every=0.05, what="new connections are refused while draining")
        assert not slow.done()
        response = await slow
        assert response.status == 200, "the request in flight finished"
        response.release()
    await eventually(lambda: process.poll() is not None, within=10, what="serve did not exit after draining")
    assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""


async def test_serve_drains_on_sigterm_and_exits_0(tmp_path: Path, upstream: Upstream) -> None:
    """One process: ready, then SIGTERM lets the request in flight finish, refuses new ones, exits 0."""
    with _serving(await _config(tmp_path, upstream)) as (process, base):
        await _ready(process, base)
        await _drained(process, base, upstream)
    assert b"Application shutdown complete" in (process.stderr.read() if process.stderr else b"")


async def test_workers_replace_a_killed_worker_and_drain_together(tmp_path: Path, upstream: Upstream) -> None:
    """`--workers 2`: two processes serve one port; a worker killed with SIGKILL is replaced and serving goes on;
    SIGTERM drains both (the request in flight finishes), new connections are refused, the parent exits 0."""
    with _serving(await _config(tmp_path, upstream), "--workers", "2") as (process, base):
        await _ready(process, base)
        await eventually(lambda: len(_workers(process.pid)) == 2, within=10, every=0.1, what="two workers")
        first = _workers(process.pid)
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: len(now := _workers(process.pid)) == 2 and victim not in now,
            within=30,
            every=0.1,
            what="the killed worker was replaced",
        )
        await _ready(process, base)
        await _drained(process, base, upstream)
    log = process.stderr.read().decode() if process.stderr else ""
    assert "with 2 workers" in log
    assert "rate limits and login throttling are counted per worker" in log


def _fail(tmp_path: Path, *args: str, config: str | None = None, **env: str) -> str:
    """Run `gateway ARGS` that must fail; return its stderr after checking it is one line and no traceback."""
    if config is not None:
        (tmp_path / "gateway.toml").write_text(config)
        args = (*args, "--config", str(tmp_path / "gateway.toml"))
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=tmp_path,
        env=_environ(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_every_startup_failure_is_one_line(tmp_path: Path) -> None:
    """Missing or unreadable config and model files, a folder for a file, an unknown matcher function, a missing or
    empty SQLite database (never created), an unreachable PostgreSQL, a busy port, a bad environment value, an
    audit webhook without its secret or with a short one: one line naming the cause, a non-zero exit."""
    migrated = tmp_path / "migrated.db"
    migrate(f"sqlite+aiosqlite:///{migrated}")
    sqlite = f'database_url = "sqlite+aiosqlite:///{migrated}"\n'
    bad_model = (ROOT / "model.conf").read_text().replace("keyMatch2(r.obj", "keyMatch9(r.obj")
    (tmp_path / "bad.conf").write_text(bad_model)
    (tmp_path / "empty.db").write_bytes(b"")
    unreadable = tmp_path / "unreadable.conf"
    unreadable.write_bytes(b"\xff\xfe not text")

    assert _fail(tmp_path, "serve", "--config", "nope.toml") == "configuration error: nope.toml: config file not found"
    assert "is a folder, not a config file" in _fail(tmp_path, "serve", "--config", str(tmp_path))
    assert "model_path: cannot read" in _fail(tmp_path, "serve", config=sqlite + 'model_path = "missing.conf"\n')
    assert "No such file or directory" in _fail(tmp_path, "serve", config=sqlite + 'model_path = "missing.conf"\n')
    assert "model_path: cannot read" in _fail(tmp_path, "serve", config=sqlite + 'model_path = "unreadable.conf"\n')
    assert "is a folder, not a model file" in _fail(tmp_path, "serve", config=sqlite + f'model_path = "{tmp_path}"\n')
    unknown = _fail(tmp_path, "serve", config=sqlite + 'model_path = "bad.conf"\n')
    assert "keyMatch9()" in unknown and "casbin does not provide" in unknown
    missing = _fail(tmp_path, "serve", config='database_url = "sqlite+aiosqlite:///nothing.db"\n')
    assert "does not exist: run `gateway migrate`" in missing
    assert not (tmp_path / "nothing.db").exists(), "a missing SQLite file is reported, never created"
    empty = _fail(tmp_path, "serve", config='database_url = "sqlite+aiosqlite:///empty.db"\n')
    assert "has no schema: run `gateway migrate` first" in empty
    down = _fail(tmp_path, "serve", GATEWAY_DATABASE_URL=f"postgresql+asyncpg://u:secret@127.0.0.1:{closed_port()}/x")
    assert "cannot reach PostgreSQL at 127.0.0.1:" in down and "secret" not in down
    assert _fail(tmp_path, "serve", GATEWAY_PORT="eighty").startswith("configuration error: GATEWAY_PORT:")
    workers = _fail(tmp_path, "serve", GATEWAY_WORKERS="many")
    assert workers.startswith("configuration error: GATEWAY_WORKERS:")
    webhook = _fail(tmp_path, "serve", config=sqlite + '[audit]\nwebhook_url = "https://siem.example/audit"\n')
    assert webhook.startswith("configuration error: ")
    assert "audit.webhook_secret: required with audit.webhook_url" in webhook
    short = _fail(tmp_path, "serve", config=sqlite, GATEWAY_AUDIT__WEBHOOK_URL="https://siem.example/audit",
                  GATEWAY_AUDIT__WEBHOOK_SECRET="too-short")  # fmt: skip
    assert short.startswith("configuration error: GATEWAY_AUDIT__WEBHOOK_SECRET:") and "too-short" not in short
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        taken = _fail(tmp_path, "serve", "--port", port, config=sqlite)
        assert taken == f"error: cannot listen on 127.0.0.1:{port} (the public listener): Address already in use"
        demo = _fail(tmp_path, "demo", "--port", port, "--database", f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
        assert "cannot listen on 127.0.0.1:" in demo and "(the demo gateway (--port))" in demo
        assert not (tmp_path / "demo.db").exists()


def test_paths_in_the_config_file_are_relative_to_its_folder(tmp_path: Path) -> None:
    """model_path, policy_dir, a file audit_log and a SQLite file given relatively are read from the config
    file's folder, whatever the working directory."""
    from gateway.settings import load_settings

    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "gateway.toml").write_text(
        'database_url = "sqlite+aiosqlite:///data/gw.db"\nmodel_path = "model.conf"\npolicy_dir = "policies"\n'
        'audit_log = "audit.jsonl"\n'
    )
    settings = load_settings(folder / "gateway.toml", environ={})
    assert settings.database_url == f"sqlite+aiosqlite:///{folder}/data/gw.db"
    assert settings.model_path == str(folder / "model.conf")
    assert settings.policy_dir == str(folder / "policies")
    assert settings.audit_log == str(folder / "audit.jsonl")
    relative = load_settings(folder / "gateway.toml", environ={"GATEWAY_MODEL_PATH": "m.conf"})
    assert relative.model_path == "m.conf", "an environment value stays relative to the working directory"


async def test_tokens_survive_a_restart(gateway: Gateway, tmp_path: Path) -> None:
    """Signing keys are stored: a second gateway on the same database accepts the first one's tokens."""
    await gateway.org("acme")
    await gateway.user("ann@acme.test", org="acme", role="viewer")
    token = await gateway.login("ann@acme.test")
    settings = gateway_settings(gateway.runtime.settings.database_url, gateway.upstream.url, audit_log="off")
    front = create_gateway(settings)
    url, server, task = await start_gateway(front)
    try:
        second = Gateway(url=url, http=gateway.http, runtime=front.runtime, upstream=gateway.upstream)
        status, _, _ = await second.call("GET", "/api/x", token=token, org="acme")
        assert status == 200
        assert front.runtime.services.tokens.ring.active_kid == gateway.runtime.services.tokens.ring.active_kid
    finally:
        server.should_exit = True
        await task


async def test_readyz_is_503_when_the_database_is_unreachable(gateway: Gateway) -> None:
    """Readiness checks the database for real; liveness does not."""
    runtime = gateway.runtime
    working = runtime.services.sessions
    unreachable = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    runtime.services.sessions = session_factory(unreachable)
    try:
        async with gateway.http.get(gateway.url + "/readyz") as response:
            assert response.status == 503
            assert (await response.json(content_type=None))["type"] == "urn:gateway:problem:not-ready"
        async with gateway.http.get(gateway.url + "/healthz") as response:
            assert response.status == 200
    finally:
        runtime.services.sessions = working
        await unreachable.dispose()
    await asyncio.sleep(0)


def test_the_readme_readyz_reports_the_system_roles_after_migrate(tmp_path: Path) -> None:
    """After `gateway migrate` alone, the shipped system roles are stored: /readyz counts their lines."""
    database = tmp_path / "fresh.db"
    migrate(f"sqlite+aiosqlite:///{database}")
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{database}"\naudit_log = "off"\n')
    port = closed_port()
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=tmp_path,
        env=_environ(),
        stderr=subprocess.DEVNULL,
    )
    try:

        def readyz() -> dict[str, object]:
            """The /readyz answer, or {} while serve does not answer yet."""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    answer: dict[str, object] = json.load(response)
                    return answer
            except OSError:
                assert process.poll() is None, "serve exited"
                return {}

        ready = eventually_blocking(readyz, within=30, every=0.1, what="serve did not answer /readyz")
        shipped = [
            line for line in (ROOT / "policies" / "system.csv").read_text().splitlines() if line[:2] in ("p,", "g,")
        ]
        assert ready["policy_rules"] == len(shipped)
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


async def test_a_response_leaves_in_one_write_and_100_continue_is_not_held(bare: BareGateway) -> None:
    """The head and a small body arrive together; a HEAD answer and an upload behind `Expect: 100-continue`
    (the interim answer is sent at once, before the body) still work."""
    tokens = bare.tokens
    auth = f"Authorization: Bearer {tokens['member']}\r\nX-Org: acme\r\n"
    host, port = bare.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /api/one HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
    first = await asyncio.wait_for(reader.read(65536), 5)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'"bytes": 0}'), first
    writer.write(f"HEAD /api/one HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(
        f"POST /api/up HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer.startswith(b"HTTP/1.1 200") and b'"bytes": 5' in answer
    writer.close()
