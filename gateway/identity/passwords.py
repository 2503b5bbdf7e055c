"""Argon2id password hashing with pwdlib, always in a worker thread so the event loop never hashes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from gateway.errors import ServiceUnavailable
from gateway.settings import Passwords

log = logging.getLogger("gateway.passwords")
T = TypeVar("T")
_ADMITTED: contextvars.ContextVar[tuple[int, object] | None] = contextvars.ContextVar(
    "gateway_hash_admitted", default=None
)
"""(gate, task) holding an admission: a task started inside one (which copies the context) holds none."""

MIN_LENGTH = 8
MAX_LENGTH = 128


CONTEXT_WORDS = ("casbin", "gateway")
"""Words of this product that make a password guessable here (ASVS 6.2.11)."""
_TRAILER = "0123456789!@#$%^&*()-_=+.,?~ "


@functools.cache
def _common() -> frozenset[str]:
    """zxcvbn's 30,000 most common passwords (shipped with the package; no network), lower-cased."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why `password` is unacceptable as a new password, or None. Any Unicode, checked exactly as typed; no
    composition rules (ASVS 6.2.5); refused when common, or built from the email's name or this product's."""
    if len(password) < MIN_LENGTH:
        return f"password: must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password: must be at most {MAX_LENGTH} characters"
    lowered = password.lower()
    core = lowered.rstrip(_TRAILER)
    common = _common()
    if lowered in common or (len(core) >= 4 and len(lowered) - len(core) <= 4 and core in common):
        return "password: too common; choose a longer passphrase"
    local = email.split("@", 1)[0].lower() if email else ""
    for word in (*CONTEXT_WORDS, local):
        if len(word) >= 3 and word in lowered:
            return "password: must not contain your email's name or this service's name"
    return None


class HashingBusy(ServiceUnavailable):
    """Every hashing slot is taken and the queue behind them is full: answered at once, before any lookup, the
    same for every email."""

    slug = "busy"
    title = "Too busy to check passwords"

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many sign-ins at once; try again shortly", headers={"retry-after": str(retry_after)})


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_concurrency(workers: int = 1) -> int:
    """Half the CPUs this process may run on, shared by `workers` processes, at least one."""
    return max(1, usable_cpus() // 2 // workers)


BUSY_SHARE = 0.01
"""Hashing's default share of the CPUs while the data plane is saturated."""


def default_busy_budget(workers: int = 1) -> float:
    """1 % of the CPUs this process may use, shared by `workers` processes."""
    return BUSY_SHARE * usable_cpus() / workers


def shared_by(passwords: Passwords, workers: int) -> Passwords:
    """`passwords` for one of `workers` processes on this machine: the bounds left to their defaults are split
    between them (each process hashes on its own), so that the machine as a whole keeps the defaults' shares."""
    if workers <= 1:
        return passwords
    concurrency = passwords.max_concurrent or default_concurrency(workers)
    budget = passwords.cpu_budget if passwords.cpu_budget is not None else default_busy_budget(workers)
    return msgspec.structs.replace(passwords, max_concurrent=concurrency, cpu_budget=budget)


def _lower_priority(niceness: int) -> None:
    """Run in each hashing thread as it starts: on Linux a thread has its own nice value, so the scheduler
    gives the event loop (proxied traffic) the CPU first and hashing what is left."""
    if niceness and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:  # not permitted here: hashing keeps the process's priority
            log.warning("could not lower the password-hashing threads' priority")


class CpuBudget:
    """Hashing's CPU time, spent against an allowance that follows how busy the event loop (the data plane) is:
    `busy` CPUs' worth a second while the loop is saturated, rising in proportion to `idle` CPUs' worth as it
    gets idle. A run starts when the allowance is not overdrawn and is charged the CPU time it took; up
    to a second's allowance may be saved up, so the first logins of a burst do not wait. Call it from the event
    loop's thread only: `loop_cpu` (the calling thread's CPU time) measures that loop."""

    SAMPLE_SECONDS = 0.1
    SATURATED = 0.7
    """The loop's CPU share taken as saturated: a loop that never waits still spends some of its time in
    system calls and waking up, so a saturated loop measures 0.85-0.95 of a CPU (bench/login_storm.py)."""

    def __init__(
        self,
        busy: float,
        idle: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        loop_cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self.busy = busy
        self.idle = max(busy, idle)
        self.rate = self.idle
        """CPUs' worth of hashing allowed now."""
        self.load = 0.0
        """The event loop's share of a CPU over the last sample (0 to 1)."""
        self._clock, self._loop_cpu = clock, loop_cpu
        self._balance = self.idle
        self._stamp = self._sampled = clock()
        self._sampled_cpu: float | None = None
        """The loop thread's CPU time at `_sampled`; None until first called (maybe built in another thread)."""

    def _update(self) -> None:
        now = self._clock()
        if self._sampled_cpu is None:
            self._sampled, self._sampled_cpu = now, self._loop_cpu()
        elif now - self._sampled >= self.SAMPLE_SECONDS:
            cpu = self._loop_cpu()
            self.load = min(1.0, max(0.0, (cpu - self._sampled_cpu) / (now - self._sampled)))
            self.rate = self.busy + (self.idle - self.busy) * max(0.0, 1.0 - self.load / self.SATURATED)
            self._sampled, self._sampled_cpu = now, cpu
        self._balance = min(self.rate, self._balance + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self) -> float:
        """Seconds until the allowance is no longer overdrawn at the current rate (0: a run may start now)."""
        self._update()
        return 0.0 if self._balance >= 0 else min(self.SAMPLE_SECONDS * 5, -self._balance / self.rate)

    def charge(self, cpu_seconds: float) -> None:
        self._update()
        self._balance -= cpu_seconds


class HashGate:
    """At most `concurrency` Argon2 runs at once, in this gate's own threads, using on average no more CPU than
    the `CpuBudget` allows (`busy_cpus` while the data plane is saturated, up to `concurrency` while it is
    idle), and at most `queue` callers waiting for one; one more is refused at once (`HashingBusy`)."""

    def __init__(self, concurrency: int, queue: int, niceness: int, busy_cpus: float | None = None) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.budget = CpuBudget(busy_cpus if busy_cpus is not None else float(concurrency), float(concurrency))
        self.cost = 0.0
        """Recent CPU seconds per run (a moving average), for Retry-After."""
        self.running = 0
        self.waiting = 0
        self.shed = 0
        """Callers refused because the queue was full (a counter)."""
        self.runs = 0
        """Argon2 runs started (a counter)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._threads = ThreadPoolExecutor(
            concurrency, thread_name_prefix="argon2", initializer=_lower_priority, initargs=(niceness,)
        )
        self._admitted = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the hashing to come, or raise `HashingBusy` now (before any other work). Within an
        admission, further admissions of the same task (its hashes and verifications) hold the same place."""
        holder = (id(self), asyncio.current_task())
        if _ADMITTED.get() == holder:
            yield
            return
        if self._admitted >= self.concurrency + self.queue:
            self.shed += 1
            raise HashingBusy(retry_after=self.drain_seconds())
        self._admitted += 1
        try:
            token = _ADMITTED.set(holder)
            try:
                yield
            finally:
                _ADMITTED.reset(token)
        finally:
            self._admitted -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a hashing thread once a slot is free (within an admission)."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()

        def timed() -> T:
            """In a hashing thread: the run, then its CPU time charged on the loop's thread, even when the caller
            has given up waiting (a cancelled request still spent it)."""
            started = time.thread_time()
            try:
                return fn(*args)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to charge
                    loop.call_soon_threadsafe(self._spent, time.thread_time() - started)

        try:
            # The allowance is a clock, not an event: poll it (at most every half second, since it follows load).
            while (pause := self.budget.wait()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(pause)
            self.running += 1
            self.runs += 1
            try:
                return await loop.run_in_executor(self._threads, timed)
            finally:
                self.running -= 1
        finally:
            self._slots.release()

    def _spent(self, seconds: float) -> None:
        self.budget.charge(seconds)
        self.cost = seconds if not self.cost else 0.8 * self.cost + 0.2 * seconds

    def drain_seconds(self) -> int:
        """Whole seconds (at least 1) until the callers admitted now have had their turn: the advice given in
        Retry-After."""
        per_second = min(self.concurrency, self.budget.rate) / self.cost if self.cost else float(self.concurrency)
        return max(1, min(60, math.ceil(self._admitted / per_second)))

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class PasswordHasher:
    """Hashes and verifies passwords through a `HashGate`; verification of an unknown user still costs one full
    Argon2 run. Callers that must refuse before doing other work (login) call `admit()` first; the others are
    admitted as they hash."""

    def __init__(self, settings: Passwords) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.time_cost,
                    memory_cost=settings.memory_kib,
                    parallelism=settings.parallelism,
                ),
            )
        )
        # A hash of a random secret: verifying against it makes an unknown email as slow as a wrong password.
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))
        concurrency = settings.max_concurrent or default_concurrency()
        queue = settings.queue if settings.queue is not None else 8 * concurrency
        busy = settings.cpu_budget if settings.cpu_budget is not None else default_busy_budget()
        self.gate = HashGate(concurrency, queue, settings.niceness, min(busy, concurrency))

    def admit(self) -> contextlib.AbstractContextManager[None]:
        return self.gate.admit()

    async def hash(self, password: str) -> str:
        with self.gate.admit():
            return await self.gate.run(self._hash.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Return (valid, new_hash); `new_hash` is set when the stored hash uses outdated parameters."""
        with self.gate.admit():
            if stored is None:
                await self.gate.run(self._hash.verify, password, self._dummy)
                return False, None
            return await self.gate.run(self._hash.verify_and_update, password, stored)
