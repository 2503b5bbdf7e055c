"""The audit webhook: every configuration change POSTed to `[audit] webhook_url` as signed JSON, oldest first, at
least once, by whichever process holds the delivery lease.

Changes only write their `audit_events` row; delivery happens here, in the background, so a receiver that is slow
or down never slows or fails a change. The shared state is the single row of `audit_delivery` (id 1):

    last_id       the last event a receiver acknowledged (2xx); the next batch starts after it
    lease_until   the holder delivers until then, and any process may take the lease once it has passed; the
                  holder knows its lease by the exact time it wrote, so renewing it and moving the cursor are
                  conditional on that value and a process that lost the lease can move nothing
    failures      failed attempts since the last success: the back-off grows with it, whoever holds the lease
    last_error    the last failure as the log line gave it (a status, a timeout, a refused connection)
    updated_at    when the last attempt ended

Times are the database's on PostgreSQL (replicas on several hosts agree on the lease whatever their clocks say),
the process's on SQLite (one host).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import __version__
from gateway.db.models import AuditDelivery, AuditRecord, utcnow
from gateway.manage.audit import WEBHOOK_ROW, events_after, settled_up_to, view
from gateway.metrics import DeliveryStats
from gateway.settings import Audit

log = logging.getLogger("gateway.audit.webhook")

SIGNATURE_HEADER = "X-Gateway-Signature"
"""`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the secret>`."""
DELIVERY_HEADER = "X-Gateway-Delivery"
"""`<first id>-<last id>` of the events in the body: a retried batch carries the same value."""
BATCH = 100
"""Events per POST."""
LEASE = dt.timedelta(seconds=30)
"""How long a delivery lease lasts; a delivery (at most 20 s, `[audit] webhook_timeout`) fits in it."""
POLL_SECONDS = 2.0
"""How often new events are looked for without a wake-up (changes made by the CLI or another replica)."""
SETTLE_SECONDS = 0.5
"""How soon to look again while another transaction is still writing events (PostgreSQL)."""
FIRST_RETRY = 1.0
MAX_RETRY = 300.0

_encoder = msgspec.json.Encoder()


def sign(secret: bytes, body: bytes, at: int) -> str:
    """The `X-Gateway-Signature` value for `body` sent at unix time `at`."""
    digest = hmac.new(secret, b"%d." % at + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def backoff(failures: int, spread: float) -> float:
    """Seconds to wait after `failures` failures in a row: 1 s doubling to 5 minutes, less up to half of it by
    `spread` (0 to 1, random), so that retries from many gateways do not arrive in step."""
    base = min(FIRST_RETRY * 2.0 ** min(failures - 1, 16), MAX_RETRY)
    return base * (1 - spread / 2)


@dataclass(frozen=True, slots=True)
class _State:
    last_id: int
    failures: int
    updated_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Transport:
    """Where a deliverer sends the trail and how a batch is written; each has its own cursor row."""

    name: str
    """For logs: `audit webhook`, `audit OTLP logs`."""
    row: int
    """Its row of `audit_delivery`."""
    url: str
    timeout: float
    encode: Callable[[list[AuditRecord]], tuple[bytes, dict[str, str]]]
    """A batch's body and its own headers (content type, signature)."""


def webhook_transport(settings: Audit) -> Transport:
    """Signed JSON to `[audit] webhook_url` (see the module docstring)."""
    if settings.webhook_url is None:
        raise ValueError("an audit webhook needs [audit] webhook_url")
    secret = settings.webhook_key()

    def encode(rows: list[AuditRecord]) -> tuple[bytes, dict[str, str]]:
        body = _encoder.encode({"events": [view(row) for row in rows]})
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: f"{rows[0].id}-{rows[-1].id}",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        }
        return body, headers

    return Transport("audit webhook", WEBHOOK_ROW, settings.webhook_url, settings.webhook_timeout, encode)


class AuditWebhook:
    """Delivers the audit trail through one transport in the background (`run`); `kick` after a commit that wrote
    events."""

    def __init__(self, transport: Transport, sessions: async_sessionmaker[AsyncSession], stats: DeliveryStats) -> None:
        self._transport = transport
        self._row = transport.row
        self._url = transport.url
        self._timeout = transport.timeout
        self._sessions = sessions
        self.stats = stats
        self._wake = asyncio.Event()
        self._lease: dt.datetime | None = None
        """The lease this process holds, as written (None: not the holder, as far as it knows)."""
        self._retry: tuple[int, dt.datetime | None, dt.datetime] | None = None
        """(failures, updated_at) of the last failure seen, and when to try again after it."""

    def kick(self) -> None:
        """Look for new events now (called after a transaction that wrote some commits)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; database failures are logged and retried, never raised."""
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
            while True:
                try:
                    pause, wakeable = await self.deliver(http)
                except Exception:
                    log.exception("%s: reading or writing the delivery state failed; retrying", self._transport.name)
                    pause, wakeable = POLL_SECONDS, True
                await self._pause(pause, wakeable=wakeable)

    async def _pause(self, seconds: float, *, wakeable: bool) -> None:
        """Wait `seconds`; a kick cuts the wait short only when `wakeable` (never during a back-off)."""
        if seconds <= 0:
            return
        if not wakeable:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def release(self) -> None:
        """Give the lease up (at shutdown), so another replica takes over at once instead of in 30 s."""
        if self._lease is None:
            return
        async with self._sessions() as db:
            await db.execute(
                update(AuditDelivery)
                .where(AuditDelivery.id == self._row, AuditDelivery.lease_until == self._lease)
                .values(lease_until=None)
            )
            await db.commit()
        self._lease = None

    async def deliver(self, http: aiohttp.ClientSession) -> tuple[float, bool]:
        """One round: at most one batch POSTed. Returns how long to wait before the next round, and whether a kick
        may cut that wait short."""
        async with self._sessions() as db:
            now = await _clock(db)
            state = await _state(db, self._row)
            lag = await db.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.id > state.last_id))
            self.stats.lag = int(lag or 0)
            if not lag:
                return POLL_SECONDS, True
            wait = self._backoff_left(state, now)
            if wait > 0:
                # Look again within a poll: another replica may have delivered meanwhile, and the lag stays fresh.
                return min(wait, POLL_SECONDS), False
            lease = await self._take_lease(db, now)
            if lease is None:
                return POLL_SECONDS, True
            settled = await settled_up_to(db)
            if settled is None:
                return SETTLE_SECONDS, False
            rows = await events_after(db, state.last_id, up_to=settled, limit=BATCH)
        if not rows:
            return POLL_SECONDS, True
        first, last = rows[0].id, rows[-1].id
        body, headers = self._transport.encode(rows)
        error = await self._post(http, body, headers)
        async with self._sessions() as db:
            ended = await _clock(db)
            held = (AuditDelivery.id == self._row) & (AuditDelivery.lease_until == lease)
            if error is None:
                moved = await db.execute(
                    update(AuditDelivery).where(held).values(last_id=last, failures=0, last_error="", updated_at=ended)
                )
                await db.commit()
                self.stats.delivered += len(rows)
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    self._lease = None
                    log.warning("%s: the lease passed on during a delivery; events %d-%d may come twice",
                                self._transport.name, first, last)  # fmt: skip
                return 0.0, False
            failures = state.failures + 1
            await db.execute(
                update(AuditDelivery).where(held).values(failures=failures, last_error=error[:500], updated_at=ended)
            )
            await db.commit()
        self.stats.failures += 1
        delay = backoff(failures, random.random())  # noqa: S311 - jitter, not a secret
        self._retry = (failures, ended, ended + dt.timedelta(seconds=delay))
        # Never the URL (it may carry a token), the secret or the body.
        log.warning(
            "%s: delivering events %d-%d failed (%s), %d in a row; next attempt in %.1f s",
            self._transport.name, first, last, error, failures, delay,
        )  # fmt: skip
        return delay, False

    def _backoff_left(self, state: _State, now: dt.datetime) -> float:
        """Seconds until the next attempt is due after the failures recorded (by any replica); 0 when due."""
        if state.failures == 0:
            self._retry = None
            return 0.0
        if self._retry is None or self._retry[:2] != (state.failures, state.updated_at):
            since = state.updated_at or now
            delay = backoff(state.failures, random.random())  # noqa: S311 - jitter, not a secret
            self._retry = (state.failures, state.updated_at, since + dt.timedelta(seconds=delay))
        return max((self._retry[2] - now).total_seconds(), 0.0)

    async def _take_lease(self, db: AsyncSession, now: dt.datetime) -> dt.datetime | None:
        """Take the lease if it is free or ours, for LEASE from `now`; the lease written, or None."""
        until = now + LEASE
        free = or_(AuditDelivery.lease_until.is_(None), AuditDelivery.lease_until < now)
        if self._lease is not None:
            free = or_(free, AuditDelivery.lease_until == self._lease)
        held = AuditDelivery.id == self._row
        taken = await db.execute(update(AuditDelivery).where(held, free).values(lease_until=until))
        await db.commit()
        self._lease = until if taken.rowcount == 1 else None  # type: ignore[attr-defined]
        return self._lease

    async def _post(self, http: aiohttp.ClientSession, body: bytes, own: dict[str, str]) -> str | None:
        """POST one batch; None when the receiver answered 2xx, else what went wrong (no URL, secret or body)."""
        headers = {"User-Agent": f"casbin-gateway/{__version__}", **own}
        try:
            async with http.post(self._url, data=body, headers=headers, allow_redirects=False) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
        except (aiohttp.ClientError, OSError) as exc:
            return type(exc).__name__


async def _clock(db: AsyncSession) -> dt.datetime:
    """Now, by the database's clock on PostgreSQL (shared by every replica), else this process's."""
    if db.get_bind().dialect.name == "postgresql":
        now = await db.scalar(select(func.now()))
        if isinstance(now, dt.datetime):
            return now.astimezone(dt.UTC)
    return utcnow()


async def _state(db: AsyncSession, row: int) -> _State:
    """The delivery row, made (cursor at 0) when missing; two processes making it at once make one."""
    query = select(AuditDelivery.last_id, AuditDelivery.failures, AuditDelivery.updated_at).where(
        AuditDelivery.id == row
    )
    found = (await db.execute(query)).first()
    if found is None:
        insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        await db.execute(
            insert(AuditDelivery).values(id=row, last_id=0, failures=0, last_error="").on_conflict_do_nothing()
        )
        await db.commit()
        found = (await db.execute(query)).one()
    return _State(last_id=int(found.last_id), failures=int(found.failures), updated_at=found.updated_at)
