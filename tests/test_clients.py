"""Slow and greedy clients, with real sockets: headers that never finish get 408, idle keep-alive connections
close, and past the connection limit a new client gets 503 at once while the others are served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import uvicorn

from tests.conftest import Upstream, bare_serving
from tests.waiting import eventually


@dataclass
class Strict:
    host: str
    port: int
    server: uvicorn.Server

    def open_connections(self) -> int:
        """Connections the server has accepted and not yet closed."""
        return len(self.server.server_state.connections)


@pytest.fixture
async def strict(upstream: Upstream, tmp_path: Path) -> AsyncIterator[Strict]:
    """A gateway with a 1-second header timeout, 2-second keep-alive and at most 20 connections (the bare data
    plane: connection handling has nothing to do with the database)."""
    clients = {"header_timeout": 1.0, "keep_alive_timeout": 2, "max_connections": 20}
    async with bare_serving(upstream, tmp_path, audit_log="off", clients=clients) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        assert gateway.server is not None
        yield Strict(host, int(port), gateway.server)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


async def test_headers_that_never_finish_get_408_and_the_connection_closes(strict: Strict) -> None:
    """Silent connections and half-sent headers (slowloris) are answered 408 within the timeout and closed,
    while a well-behaved client is served meanwhile."""
    host, port = strict.host, strict.port
    opened = []
    for partial in (b"", b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Slow: ", b"G"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(partial)
        opened.append((reader, writer))
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/public/x") as response:
        assert response.status == 200
    for reader, writer in opened:
        answer = await _read_all(reader)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"urn:gateway:problem:request-timeout" in answer
        writer.close()
    assert time.monotonic() - started < 5


async def test_idle_keep_alive_connections_close(strict: Strict) -> None:
    """After a response, a connection with no next request is closed after keep_alive_timeout."""
    host, port = strict.host, strict.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    started = time.monotonic()
    answer = await _read_all(reader)  # returns when the server closes the idle connection
    assert answer.startswith(b"HTTP/1.1 200")
    assert 1.5 < time.monotonic() - started < 6
    writer.close()


async def test_past_the_connection_limit_a_new_client_gets_503_at_once(strict: Strict) -> None:
    """With max_connections open, one more is answered 503 with Retry-After and closed; when the idle ones
    time out, new clients are served again."""
    host, port = strict.host, strict.port
    hogs = [await asyncio.open_connection(host, port) for _ in range(20)]
    # The kernel completes a connection before the server accepts it: wait until the server holds all 20.
    await eventually(lambda: strict.open_connections() == 20, what="the server never held the 20 connections")
    reader, writer = await asyncio.open_connection(host, port)
    answer = await _read_all(reader)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"retry-after: 1" in answer.lower()
    writer.close()
    for hog_reader, hog_writer in hogs:
        assert (await _read_all(hog_reader)).startswith(b"HTTP/1.1 408 ")
        hog_writer.close()
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/public/x") as response:
        assert response.status == 200
