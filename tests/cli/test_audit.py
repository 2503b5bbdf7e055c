"""`gateway audit prune` (gateway/cli/audit.py) against a real database: deletes what is older than --days or the
configured retention, says what it kept, and refuses to guess an age."""

from __future__ import annotations

from tests.conftest import run_cli
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
