"""`gateway serve` as a process, restarts, and readiness."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.asgi import create_gateway
from gateway.db.engine import create_engine, session_factory
from tests.conftest import ROOT, Gateway, gateway_settings, start_gateway


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_runs_and_answers_healthz(db_url: str, tmp_path: Path) -> None:
    """`gateway serve --config F --port P` starts, answers /readyz, and shuts down gracefully on SIGTERM."""
    port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'model_path = "{ROOT / "model.conf"}"\naudit_log = "off"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = db_url
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.1)
    finally:
        process.terminate()
        code = process.wait(timeout=10)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how the process ended
    assert code in (0, -15)
    assert b"Application shutdown complete" in (process.stderr.read() if process.stderr else b"")


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
        assert front.runtime.tokens.ring.active_kid == gateway.runtime.tokens.ring.active_kid
    finally:
        server.should_exit = True
        await task


async def test_readyz_is_503_when_the_database_is_unreachable(gateway: Gateway) -> None:
    """Readiness checks the database for real; liveness does not."""
    runtime = gateway.runtime
    working = runtime.sessions
    unreachable = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    runtime.sessions = session_factory(unreachable)
    try:
        async with gateway.http.get(gateway.url + "/readyz") as response:
            assert response.status == 503
            assert (await response.json(content_type=None))["type"] == "urn:gateway:problem:not-ready"
        async with gateway.http.get(gateway.url + "/healthz") as response:
            assert response.status == 200
    finally:
        runtime.sessions = working
        await unreachable.dispose()
    await asyncio.sleep(0)
