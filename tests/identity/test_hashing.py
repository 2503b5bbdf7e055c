"""Bounded password hashing: at most `concurrency` Argon2 runs at once, a short queue, and at once a 503 beyond."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from gateway.identity.passwords import HashGate, HashingBusy, PasswordHasher
from gateway.settings import Passwords
from tests.conftest import FAST_PASSWORDS


async def _until(predicate: object, what: str) -> None:
    for _ in range(200):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_the_gate_runs_a_bounded_number_and_sheds_beyond_the_queue() -> None:
    gate = HashGate(concurrency=1, queue=1, niceness=0)
    release = threading.Event()
    threads: set[str] = set()

    def work() -> str:
        threads.add(threading.current_thread().name)
        release.wait(5)
        return "done"

    async def admitted() -> str:
        with gate.admit():
            return await gate.run(work)

    try:
        first = asyncio.create_task(admitted())
        await _until(lambda: gate.running == 1, "the first run started")
        second = asyncio.create_task(admitted())
        await _until(lambda: gate.waiting == 1, "the second caller queued")
        with pytest.raises(HashingBusy) as refused, gate.admit():
            raise AssertionError("admitted beyond the queue")
        assert refused.value.status == 503
        assert int(refused.value.headers["retry-after"]) >= 1
        assert (gate.running, gate.waiting, gate.shed, gate.runs) == (1, 1, 1, 1), "the refused caller never ran"
        release.set()
        assert await first == await second == "done"
        assert gate.runs == 2
        assert threads == {name for name in threads if name.startswith("argon2")}, "the gate's own threads"
        with gate.admit():
            assert await gate.run(lambda: 1) == 1, "room again once the work is done"
    finally:
        release.set()
        gate.close()


async def test_an_admission_covers_the_hashes_inside_it() -> None:
    """Login admits first (before looking the user up), then verifies: one place in the queue, not two."""
    hasher = PasswordHasher(Passwords(**FAST_PASSWORDS, max_concurrent=1, queue=0))
    try:
        stored = await hasher.hash("a long passphrase")
        with hasher.admit():
            # Another request (a task of its own, as uvicorn makes one per request) finds the one place taken.
            with pytest.raises(HashingBusy):
                await asyncio.create_task(_other(hasher), context=contextvars.Context())
            assert await hasher.verify("a long passphrase", stored) == (True, None)
        assert hasher.gate.shed == 1
    finally:
        hasher.gate.close()


async def _other(hasher: PasswordHasher) -> tuple[bool, str | None]:
    return await hasher.verify("anything at all", None)


def test_the_bound_is_validated() -> None:
    from gateway.settings import ConfigError, settings_from_mapping

    for bad in ({"max_concurrent": 0}, {"queue": -1}, {"niceness": 20}):
        with pytest.raises(ConfigError):
            settings_from_mapping({"passwords": bad})
