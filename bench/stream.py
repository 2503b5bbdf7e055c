"""Streaming: a 1 GB upload and a 1 GB download through the gateway, with the gateway's peak RSS.

    python bench/stream.py [--megabytes 1024]

Bodies stream in both directions, so the gateway's memory must stay flat whatever the size. Prints the time
and throughput of each transfer, and the gateway process's RSS before and its peak (VmHWM) after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from proxy import BENCH_PASSWORD, BENCH_USER, ROOT, clean_up, free_port, login, seed, wait_for

CHUNK = 256 * 1024


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def sink(request: web.Request) -> web.Response:
    received = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        received += len(chunk)
    return web.json_response({"received": received})


async def source(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    block = b"\xab" * CHUNK
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def run(size: int, upstream_port: int, base: str, token: str, pid: int) -> None:
    app = web.Application(client_max_size=size + 1)
    app.router.add_put("/files/upload", sink)
    app.router.add_get("/files/download/{size}", source)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    headers = {"Authorization": f"Bearer {token}", "X-Org": "acme"}
    before = rss_kib(pid, "VmRSS")

    async def body() -> AsyncIterator[bytes]:
        block = b"\xcd" * CHUNK
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            yield piece
            sent += len(piece)

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.perf_counter()
        async with http.put(base + "/files/upload", data=body(), headers=headers) as response:
            result = await response.json()
        up = time.perf_counter() - started
        assert result["received"] == size, result
        started = time.perf_counter()
        received = 0
        async with http.get(f"{base}/files/download/{size}", headers=headers) as response:
            async for chunk in response.content.iter_chunked(CHUNK):
                received += len(chunk)
        down = time.perf_counter() - started
        assert received == size, received
    await runner.cleanup()
    mib = size / 2**20
    print(f"upload   {mib:.0f} MiB in {up:.1f} s ({mib / up:.0f} MiB/s), body received whole by the upstream")
    print(f"download {mib:.0f} MiB in {down:.1f} s ({mib / down:.0f} MiB/s), body received whole by the client")
    print(
        f"gateway RSS: {before / 1024:.0f} MiB before, peak {rss_kib(pid, 'VmHWM') / 1024:.0f} MiB "
        "(peak over the process's whole life, start-up included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args()
    size = args.megabytes * 2**20
    work = Path(tempfile.mkdtemp(prefix="gw-stream-"))
    upstream_port, gw_port = free_port(), free_port()
    (work / "gateway.toml").write_text(
        f'database_url = "sqlite+aiosqlite:///{work / "bench.db"}"\nmodel_path = "{ROOT / "model.conf"}"\n'
        f'audit_log = "off"\n[[routes]]\nprefix = "/files"\nupstream = "http://127.0.0.1:{upstream_port}"\n'
        f"max_body_bytes = {size + 1}\nread_timeout = 120\n"
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(work / "gateway.toml")}
    cli = [sys.executable, "-m", "gateway.cli"]
    seed(env)
    log = (work / "gateway.log").open("w")
    gateway = subprocess.Popen([*cli, "serve", "--port", str(gw_port)], cwd=ROOT, env=env, stderr=log)
    try:
        base = f"http://127.0.0.1:{gw_port}"
        wait_for(base + "/healthz")
        token = login(base, BENCH_USER, BENCH_PASSWORD)
        asyncio.run(run(size, upstream_port, base, token, gateway.pid))
    finally:
        clean_up([gateway], log, work)


if __name__ == "__main__":
    main()
