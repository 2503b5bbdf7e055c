"""The built wheel works outside the checkout: model, system roles and migrations come with the package."""

from __future__ import annotations

import asyncio
import json
import os
import site
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import PASSWORD, ROOT, Upstream, closed_port
from tests.waiting import eventually


async def _run(*args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 180)
    assert process.returncode == 0, (args, err.decode())
    return out.decode()


async def test_an_installed_wheel_migrates_and_serves_outside_the_checkout(tmp_path: Path, upstream: Upstream) -> None:
    """`pip install` of the wheel into a fresh virtual environment, then `gateway migrate`, CLI set-up and
    `gateway serve` from a folder outside the checkout, with a config whose paths are relative to its own
    folder: the system roles are stored and decide a proxied request."""
    wheels = tmp_path / "wheels"
    await _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT), cwd=tmp_path)
    venv = tmp_path / "venv"
    await _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    (wheel,) = wheels.glob("casbin_gateway-*.whl")
    await _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", str(wheel), cwd=tmp_path)
    # The dependencies are this environment's (appended after the fresh one's own site-packages, so the installed
    # `gateway` comes first; the checkout's editable hook is not loaded from an appended folder).
    fresh_site = next((venv / "lib").glob("python3*/site-packages"))
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ.pop("PYTHONPATH", None)
    work = tmp_path / "elsewhere"
    (work / "etc").mkdir(parents=True)
    where = await _run(python, "-c", "import gateway; print(gateway.__file__)", cwd=work, env=environ)
    assert where.startswith(str(venv)), where
    config = work / "etc" / "gateway.toml"
    config.write_text(
        'database_url = "sqlite+aiosqlite:///gateway.db"\naudit_log = "audit.jsonl"\n'
        "[passwords]\nmemory_kib = 1024\ntime_cost = 1\nparallelism = 1\n"
        f'[[routes]]\nprefix = "/api"\nupstream = "{upstream.url}"\n'
    )
    gateway = [str(venv / "bin" / "gateway")]
    options = ["--config", str(config)]
    assert "system roles are stored" in await _run(*gateway, "migrate", *options, cwd=work, env=environ)
    assert (work / "etc" / "gateway.db").exists(), "a relative SQLite path is relative to the config file"
    await _run(*gateway, "orgs", "create", "--slug", "acme", "--name", "Acme", *options, cwd=work, env=environ)
    await _run(*gateway, "users", "create", "--email", "v@acme.test", *options, cwd=work, env=environ, stdin=PASSWORD)
    await _run(
        *gateway, "members", "add", "--org", "acme", "--email", "v@acme.test", "--role", "viewer", *options,
        cwd=work,
        env=environ,
    )  # fmt: skip
    port = closed_port()
    serving = await asyncio.create_subprocess_exec(
        *gateway, "serve", *options, "--port", str(port), cwd=work, env=environ, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def readyz() -> dict[str, Any]:
                """The /readyz answer, or {} while the gateway is not ready yet."""
                try:
                    async with http.get(base + "/readyz") as response:
                        if response.status == 200:
                            answer: dict[str, Any] = await response.json()
                            return answer
                except aiohttp.ClientError:
                    pass
                assert serving.returncode is None, "the installed gateway exited"
                return {}

            ready = await eventually(readyz, within=30, every=0.1, what="the installed gateway never became ready")
            assert ready["policy_rules"] > 0
            login = {"email": "v@acme.test", "password": PASSWORD}
            async with http.post(base + "/auth/login", json=login) as response:
                token = (await response.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
            async with http.get(base + "/api/orders", headers=headers) as response:
                assert response.status == 200
            async with http.delete(base + "/api/orders", headers=headers) as response:
                assert response.status == 403
    finally:
        serving.terminate()
        await serving.wait()
    assert serving.returncode == 0
    lines = (work / "etc" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines][-2:] == [200, 403]
