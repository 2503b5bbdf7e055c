"""Bounded password hashing: at most `concurrency` Argon2 runs at once, a short queue, and at once a 503 beyond."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from gateway.identity.passwords import (
    BUSY_SHARE,
    CpuBudget,
    HashGate,
    HashingBusy,
    PasswordHasher,
    shared_by,
    usable_cpus,
)
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

    for bad in ({"max_concurrent": 0}, {"queue": -1}, {"niceness": 20}, {"cpu_budget": 0}, {"cpu_budget": -1.0}):
        with pytest.raises(ConfigError):
            settings_from_mapping({"passwords": bad})


class _Clocks:
    """A wall clock and the event loop's CPU clock, both moved by hand."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def run(self, seconds: float, loop_share: float) -> None:
        self.wall += seconds
        self.cpu += seconds * loop_share


def test_the_allowance_follows_the_event_loops_load() -> None:
    clocks = _Clocks()
    budget = CpuBudget(0.05, 2.0, clock=lambda: clocks.wall, loop_cpu=lambda: clocks.cpu)
    assert budget.wait() == 0, "a quiet gateway hashes at once"
    clocks.run(1, loop_share=0.95)  # proxied traffic keeps the loop busy
    budget.wait()
    assert budget.rate == pytest.approx(0.05), "a saturated loop leaves hashing its floor"
    budget.charge(0.5)  # one run took half a CPU-second
    pause = budget.wait()
    assert pause == pytest.approx(0.5, abs=0.01), "polled again within half a second, while the floor pays it back"
    clocks.run(2, loop_share=1.0)
    assert budget.wait() > 0, "paid back at 0.05 CPUs a second: 0.1 of 0.45 so far"
    clocks.run(8, loop_share=1.0)
    assert budget.wait() == 0
    clocks.run(1, loop_share=0.35)  # half the saturation mark
    budget.wait()
    assert budget.load == pytest.approx(0.35)
    assert budget.rate == pytest.approx(0.05 + (2.0 - 0.05) * 0.5)
    clocks.run(1, loop_share=0.0)
    budget.wait()
    assert budget.rate == pytest.approx(2.0), "an idle loop leaves hashing every slot"
    clocks.run(60, loop_share=0.0)
    budget.charge(2.5)
    assert budget.wait() > 0, "at most a second's allowance is saved up, however long the quiet"


async def test_a_spent_allowance_holds_the_next_run_in_the_queue() -> None:
    gate = HashGate(concurrency=1, queue=0, niceness=0, busy_cpus=0.01)
    clocks = _Clocks()
    gate.budget = CpuBudget(0.01, 1.0, clock=lambda: clocks.wall, loop_cpu=lambda: clocks.cpu)
    assert gate.budget.wait() == 0  # the first call takes the first sample of the loop's CPU clock
    clocks.run(1, loop_share=1.0)  # saturated

    def burn() -> int:
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
        return 1

    async def admitted() -> int:
        with gate.admit():
            return await gate.run(burn)

    try:
        assert await admitted() == 1
        assert gate.cost >= 0.05, "the run is charged the CPU time it took"
        second = asyncio.create_task(admitted())
        await asyncio.sleep(0.1)
        assert (gate.runs, gate.running) == (1, 0), "overdrawn: the next run waits, holding the one slot"
        with pytest.raises(HashingBusy) as refused, gate.admit():
            raise AssertionError("admitted beyond the queue")
        assert int(refused.value.headers["retry-after"]) >= 2, "advice from the allowance: one run per ~5 s here"
        clocks.run(10, loop_share=1.0)  # 0.1 CPU-seconds paid back at 0.01 a second
        assert await asyncio.wait_for(second, 2) == 1
        assert gate.runs == 2
    finally:
        gate.close()


def test_workers_split_the_default_bounds() -> None:
    alone = Passwords()
    assert shared_by(alone, 1) is alone
    split = shared_by(alone, 4)
    assert split.max_concurrent == max(1, usable_cpus() // 2 // 4)
    assert split.cpu_budget == pytest.approx(BUSY_SHARE * usable_cpus() / 4)
    chosen = Passwords(max_concurrent=3, cpu_budget=0.5)
    assert shared_by(chosen, 4) == chosen, "what the operator set is per worker, as documented"


async def test_a_caller_that_gives_up_still_pays_for_the_run() -> None:
    """A request cancelled mid-hash (its client went away) cannot dodge the allowance: the thread's CPU is
    charged when it finishes."""
    gate = HashGate(concurrency=1, queue=0, niceness=0, busy_cpus=0.01)
    clocks = _Clocks()
    gate.budget = CpuBudget(0.01, 0.01, clock=lambda: clocks.wall, loop_cpu=lambda: clocks.cpu)
    started = threading.Event()

    def burn() -> None:
        started.set()
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass

    async def admitted() -> None:
        with gate.admit():
            await gate.run(burn)

    try:
        caller = asyncio.create_task(admitted())
        await asyncio.to_thread(started.wait, 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await _until(lambda: gate.cost > 0, "the run was charged")
        assert gate.cost >= 0.05
        assert gate.budget.wait() > 0, "the allowance is overdrawn by the abandoned run"
    finally:
        gate.close()
