"""The audit webhook (gateway/manage/audit_webhook.py) through real parts: gateways on real ports making changes
through the admin API, and a real receiver (an aiohttp server on an ephemeral port) that checks every signature
with the README's own `verify`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from gateway.db.engine import create_engine, session_factory
from gateway.manage.common import record
from gateway.settings import Settings
from tests.conftest import CLI, ROOT, Gateway, Upstream, closed_port, gateway_settings, load_system_policy, serving
from tests.manage.audit_helpers import add_events, delivery_row, event_ids
from tests.waiting import eventually

SECRET = "a-test-secret-of-more-than-32-characters"


def _readme_verify() -> Callable[[bytes, bytes, str], bool]:
    """The receiver's check as the README shows it (its one python block that reads X-Gateway-Signature)."""
    readme = (ROOT / "README.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def verify" in block]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example, run as shown
    return cast(Callable[[bytes, bytes, str], bool], namespace["verify"])


verify = _readme_verify()


@dataclass
class Attempt:
    at: float
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A webhook receiver on a real port: answers 503 while `failing`, hangs for `hang` seconds, records all."""

    url: str = ""
    failing: bool = False
    hang: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)

    def accepted(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.status == 200]

    def delivered_ids(self) -> list[int]:
        """Every event id in an accepted delivery, in the order received (repeats included)."""
        return [event["id"] for attempt in self.accepted() for event in json.loads(attempt.body)["events"]]


async def _receive(receiver: Receiver, request: web.Request) -> web.Response:
    body = await request.read()
    if receiver.hang:
        await asyncio.sleep(receiver.hang)
    status = 503 if receiver.failing else 200
    receiver.attempts.append(Attempt(time.monotonic(), dict(request.headers), body, status))
    return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/audit", functools.partial(_receive, found))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/audit"  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


def _settings(db_url: str, upstream: Upstream, tmp_path: Path, url: str, **audit: Any) -> Settings:
    config = {"webhook_url": url, "webhook_secret": SECRET, "webhook_timeout": 2.0, **audit}
    return gateway_settings(db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), audit=config)


async def _root(gateway: Gateway) -> str:
    """A superadmin's access token."""
    await gateway.user("root@platform.test", superadmin=True)
    return await gateway.login("root@platform.test")


async def _create_org(gateway: Gateway, token: str, slug: str) -> float:
    """POST /admin/orgs; asserts it succeeded and returns how long it took."""
    started = time.monotonic()
    status, _, body = await gateway.call("POST", "/admin/orgs", token=token, json={"slug": slug, "name": slug.title()})
    assert status == 201, body
    return time.monotonic() - started


async def _all_delivered(receiver: Receiver, db_url: str, within: float = 15.0) -> list[int]:
    """Wait until every stored event reached the receiver; the stored ids."""

    async def done() -> list[int]:
        stored = await event_ids(db_url)
        return stored if set(stored) <= set(receiver.delivered_ids()) else []

    return await eventually(done, within=within, every=0.1, what="the events never all reached the receiver")


async def test_the_receiver_gets_every_event_in_order_signed_as_the_readme_says(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """Changes through the admin API reach the receiver in id order, exactly once when nothing fails, as
    `{"events": [...]}` with the NDJSON export's objects, a delivery id naming the batch, and a signature the
    README's `verify` accepts (and refuses for another body, another secret or an old timestamp)."""
    await load_system_policy(db_url)
    async with serving(_settings(db_url, upstream, tmp_path, receiver.url), upstream) as gateway:
        token = await _root(gateway)
        for slug in ("acme", "globex", "initech"):
            await _create_org(gateway, token, slug)
        stored = await _all_delivered(receiver, db_url)
        assert receiver.delivered_ids() == stored, "in order, each once"
        status, _, exported = await gateway.call("GET", "/admin/audit/export", token=token)
        assert status == 200
        sent = [event for attempt in receiver.accepted() for event in json.loads(attempt.body)["events"]]
        assert sent == [json.loads(line) for line in exported.splitlines()]
        assert {event["action"] for event in sent} >= {"org.create"}
        status, _, metrics = await gateway.call("GET", "/metrics")
        assert f"gateway_audit_webhook_delivered_total {float(len(stored))}" in metrics.decode()
        assert "gateway_audit_webhook_lag_events 0.0" in metrics.decode()

    for attempt in receiver.accepted():
        assert attempt.headers["Content-Type"] == "application/json"
        ids = [event["id"] for event in json.loads(attempt.body)["events"]]
        assert attempt.headers["X-Gateway-Delivery"] == f"{ids[0]}-{ids[-1]}"
        signature = attempt.headers["X-Gateway-Signature"]
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
        assert verify(SECRET.encode(), attempt.body, signature)
        assert not verify(SECRET.encode(), attempt.body + b" ", signature)
        assert not verify(b"another-secret-of-more-than-32-characters", attempt.body, signature)
    stale = receiver.accepted()[0]
    sent_at = int(stale.headers["X-Gateway-Signature"].split(",")[0][2:])
    assert not verify(SECRET.encode(), stale.body, stale.headers["X-Gateway-Signature"].replace(str(sent_at), "1"))
    row = await delivery_row(db_url)
    assert row is not None and (row.last_id, row.failures, row.last_error) == (stored[-1], 0, "")


async def test_a_failing_receiver_gets_the_events_again_until_it_takes_them(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the receiver answers 503 the same events are sent again, later each time (1 s doubling, less up to
    half); failures and the last error are recorded and logged without the secret or the body. Once it answers
    200 everything arrives, in order, nothing lost and nothing twice among what it accepted."""
    receiver.failing = True
    await load_system_policy(db_url)
    caplog.set_level(logging.WARNING, logger="gateway.audit.webhook")
    async with serving(_settings(db_url, upstream, tmp_path, receiver.url), upstream) as gateway:
        token = await _root(gateway)
        await _create_org(gateway, token, "acme")

        async def failed_thrice() -> bool:
            row = await delivery_row(db_url)
            return row is not None and row.failures >= 3

        await eventually(failed_thrice, within=15, every=0.1, what="three failed attempts")
        row = await delivery_row(db_url)
        assert row is not None and row.last_error == "HTTP 503" and row.last_id == 0
        await _create_org(gateway, token, "globex")
        receiver.failing = False
        stored = await _all_delivered(receiver, db_url, within=20)
        assert receiver.delivered_ids() == stored, "in order, nothing twice"
        _, _, metrics = await gateway.call("GET", "/metrics")
        failures = re.search(r"^gateway_audit_webhook_failures_total (\S+)$", metrics.decode(), re.MULTILINE)
        assert failures is not None and float(failures.group(1)) >= 3

    failed = [attempt for attempt in receiver.attempts if attempt.status == 503]
    assert len(failed) >= 3
    first = json.loads(failed[0].body)["events"][0]["id"]
    assert all(json.loads(attempt.body)["events"][0]["id"] == first for attempt in failed), "retried from the same"
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(failed)]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, f"back-off of 1 s, then 2 s, less up to half: {gaps}"
    row = await delivery_row(db_url)
    assert row is not None and (row.failures, row.last_error, row.last_id) == (0, "", stored[-1])
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.audit.webhook"]
    assert any("failed (HTTP 503)" in message for message in warnings)
    for message in warnings:
        assert SECRET not in message and receiver.url not in message and "org.create" not in message


@pytest.mark.parametrize("down", ["refused", "hanging"])
async def test_a_receiver_that_is_down_neither_slows_nor_fails_a_change(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path, down: str
) -> None:
    """With the receiver refusing connections, or accepting and never answering within the timeout, admin changes
    still answer at once and are stored; the deliverer records why it failed."""
    receiver.hang = 30.0
    url = f"http://127.0.0.1:{closed_port()}/audit" if down == "refused" else receiver.url
    await load_system_policy(db_url)
    async with serving(_settings(db_url, upstream, tmp_path, url), upstream) as gateway:
        token = await _root(gateway)
        took = [await _create_org(gateway, token, f"org{index}") for index in range(5)]
        assert max(took) < 1.0, f"a change waited for the webhook (timeout 2 s): {took}"

        async def failed() -> str:
            row = await delivery_row(db_url)
            return row.last_error if row is not None and row.failures else ""

        error = await eventually(failed, within=10, every=0.1, what="a recorded delivery failure")
        assert error.startswith("cannot connect") if down == "refused" else error == "no answer within 2 s"
        status, _, body = await gateway.call("GET", "/admin/audit?action=org.create", token=token)
        assert status == 200 and len(json.loads(body)["items"]) == 5
    assert not receiver.accepted()


async def test_two_gateways_on_one_database_deliver_each_event_once(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """Two gateways sharing a database and a slow webhook (each POST takes 0.3 s, so both look while a batch is
    under way): 250 waiting events and changes made through either reach the receiver once each, in id order,
    through whichever holds the lease."""
    await load_system_policy(db_url)
    await add_events(db_url, *([1.0] * 250))
    receiver.hang = 0.3
    settings = _settings(db_url, upstream, tmp_path, receiver.url)
    async with serving(settings, upstream) as first, serving(settings, upstream) as second:
        token = await _root(first)
        await second.runtime.refresh()  # the superadmin made through `first` (on SQLite, within a poll anyway)
        for index in range(6):
            await _create_org(first if index % 2 else second, token, f"org{index}")
        stored = await _all_delivered(receiver, db_url, within=30)
        assert receiver.delivered_ids() == stored, "each once, in order"
        row = await delivery_row(db_url)
        assert row is not None and row.lease_until is not None


async def test_when_the_holder_stops_another_gateway_takes_over_at_once(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """The gateway holding the lease gives it up when it stops: another one delivers the rest without waiting for
    the lease to run out (30 s); nothing is lost (a batch cut off by the stop may come again)."""
    ids = await add_events(db_url, *([1.0] * 500))
    receiver.hang = 0.3
    settings = _settings(db_url, upstream, tmp_path, receiver.url)
    holder = contextlib.AsyncExitStack()
    await holder.enter_async_context(serving(settings, upstream))
    try:
        # The first gateway alone delivers its first batch: it holds the lease.
        await eventually(lambda: receiver.accepted(), within=10, what="a first delivery")
        async with serving(settings, upstream) as second:
            await holder.aclose()
            stopped = time.monotonic()
            await _all_delivered(receiver, db_url, within=20)
            assert time.monotonic() - stopped < 15, "taken over at once, not after the lease ran out"
            assert second.runtime.services.metrics.webhook is not None
            assert second.runtime.services.metrics.webhook.delivered > 0
    finally:
        await holder.aclose()
    assert list(dict.fromkeys(receiver.delivered_ids())) == ids, "nothing lost, first deliveries in order"


async def test_retention_keeps_old_events_until_the_webhook_has_them(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """With a webhook and retention_days = 30, old events the receiver has not taken survive the prune at start;
    once delivered, the next prune deletes them (and keeps the recent ones)."""
    receiver.failing = True
    old = await add_events(db_url, 90, 60)
    recent = await add_events(db_url, 1, 0)
    settings = _settings(db_url, upstream, tmp_path, receiver.url, retention_days=30)
    async with serving(settings, upstream) as gateway:
        await eventually(lambda: receiver.attempts, within=10, what="a first attempt")
        assert (await gateway.runtime.prune_audit()).removed == 0
        assert await event_ids(db_url) == old + recent
        receiver.failing = False
        await _all_delivered(receiver, db_url, within=20)
        pruned = await gateway.runtime.prune_audit()
    assert pruned.removed == 2
    assert await event_ids(db_url) == recent


async def test_an_open_transaction_holds_back_the_events_after_it(
    db_url: str, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """While a change that wrote an event is still open, a later change's event waits for it (the audit chain's
    head is locked until the first commits: events are chained, and become visible, in commit order), so nothing
    is delivered out of order; when it commits, both arrive in order."""
    engine = create_engine(db_url)
    try:
        async with serving(_settings(db_url, upstream, tmp_path, receiver.url), upstream):
            async with session_factory(engine)() as slow:
                record(slow, CLI, "test.slow", org=None, target="slow")
                await slow.flush()
                later = asyncio.create_task(add_events(db_url, 0))
                # Nothing to wait for: this proves an absence, for longer than a poll (2 s).
                await asyncio.sleep(3)
                assert not later.done(), "the later change waits for the chain's head"
                assert receiver.delivered_ids() == []
                await slow.commit()
            await later
            stored = await _all_delivered(receiver, db_url)
            assert receiver.delivered_ids() == stored and len(stored) == 2
    finally:
        await engine.dispose()
