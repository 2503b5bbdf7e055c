"""`gateway audit prune|tail` (gateway/cli/audit.py) against a real database: prune deletes what is older than
--days or the configured retention, says what it kept, and refuses to guess an age; tail shows the last events,
then each new one as it is committed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conftest import ROOT, run_cli
from tests.manage.audit_helpers import add_events, event_ids, set_delivered

SECRET = "0123456789abcdef" * 4


async def test_prune_deletes_events_older_than_the_days_given(db_url: str) -> None:
    """`--days 30` deletes the events of 31 and 60 days and keeps the one of 2 days."""
    ids = await add_events(db_url, 60, 31, 2)
    done = run_cli(["audit", "prune", "--days", "30"], db_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["removed 2 audit events older than 30 days"]
    assert await event_ids(db_url) == ids[2:]


async def test_prune_uses_the_configured_retention_and_keeps_what_the_webhook_lacks(db_url: str) -> None:
    """Without --days, `[audit] retention_days` decides; with a webhook configured, events it has not delivered
    stay, and the command says how many."""
    ids = await add_events(db_url, 60, 50, 40, 1)
    await set_delivered(db_url, ids[0])
    env = {
        "GATEWAY_AUDIT__RETENTION_DAYS": "30",
        "GATEWAY_AUDIT__WEBHOOK_URL": "http://127.0.0.1:9/audit",
        "GATEWAY_AUDIT__WEBHOOK_SECRET": SECRET,
    }
    done = run_cli(["audit", "prune"], db_url, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "removed 1 audit events older than 30 days",
        "kept 2 as old (not delivered to the webhook yet, or the newest)",
    ]
    assert await event_ids(db_url) == ids[1:]
    assert SECRET not in done.stdout + done.stderr


def test_prune_needs_an_age(db_url: str) -> None:
    """No --days and no retention configured: exit 1 saying what to give; a bad --days is a usage error."""
    done = run_cli(["audit", "prune"], db_url)
    assert done.returncode == 1
    assert "pass --days N or set [audit] retention_days" in done.stderr
    assert run_cli(["audit", "prune", "--days", "0"], db_url).returncode == 2


@asynccontextmanager
async def _tail(db_url: str, *args: str) -> AsyncIterator[asyncio.StreamReader]:
    """`gateway audit tail ARGS` running against `db_url`; its standard output, line by line."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ["GATEWAY_DATABASE_URL"] = db_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "audit", "tail", *args,
        cwd=ROOT, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        yield process.stdout
    finally:
        process.terminate()
        await process.wait()


async def _line(stdout: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(stdout.readline(), timeout=15)).decode().rstrip("\n")


async def test_tail_shows_the_last_events_then_follows_one_org(db_url: str) -> None:
    """`--org acme --json --last 2` prints acme's two newest events (not globex's), then acme's new ones as they
    are committed, as the export's JSON objects, in id order."""
    await add_events(db_url, 3, 2, 1, org="acme")
    before = await add_events(db_url, 1, 0, org="acme")
    await add_events(db_url, 0, org="globex")
    async with _tail(db_url, "--org", "acme", "--json", "--last", "2") as stdout:
        shown = [json.loads(await _line(stdout)) for _ in range(2)]
        assert [event["id"] for event in shown] == before
        assert set(shown[0]) == {
            "id",
            "created_at",
            "actor",
            "action",
            "org",
            "target",
            "before",
            "after",
            "request_id",
            "seq",
            "prev_hash",
            "hash",
        }
        await add_events(db_url, 0, org="globex")
        later = await add_events(db_url, 0, 0, org="acme")
        followed = [json.loads(await _line(stdout)) for _ in range(2)]
    assert [event["id"] for event in followed] == later
    assert {event["org"] for event in shown + followed} == {"acme"}


async def test_tail_prints_columns_and_starts_at_the_end_with_last_0(db_url: str) -> None:
    """Without --json: a header, then tab-separated columns; `--last 0` shows only what comes after it started."""
    await add_events(db_url, 5, org=None)
    async with _tail(db_url, "--last", "0") as stdout:
        assert (await _line(stdout)).split("\t") == [
            "id",
            "created_at",
            "actor",
            "action",
            "org",
            "target",
            "request_id",
        ]
        (new,) = await add_events(db_url, 0, org=None)
        columns = (await _line(stdout)).split("\t")
    assert columns[0] == str(new)
    assert columns[2:] == ["cli:seed", "test.seed", "-", "aged 0 days", "-"]
