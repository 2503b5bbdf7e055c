"""The tamper-evident audit trail: every change is chained as it commits; `gateway audit verify` accepts an
untouched trail (from the database or an export) and names the first record of an edited, deleted, reordered or
truncated one; checkpoints keep a retention cut verifiable; request decision logs are chained per process."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

from sqlalchemy import delete, select, update

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import AuditChain, AuditCheckpoint, AuditRecord
from tests.api.admin_helpers import World, build_world
from tests.conftest import PASSWORD, Gateway, InProcessCli, Upstream, gateway_settings, load_system_policy, serving
from tests.manage.audit_helpers import add_events


async def _changes(world: World, count: int, prefix: str = "role") -> None:
    for n in range(count):
        body = {"name": f"{prefix}-{n}", "permissions": [{"path": f"/api/r{n}/*", "methods": ["GET"]}]}
        status, _, _ = await world.call("admin", "POST", "/admin/orgs/acme/roles", body)
        assert status == 201


async def _export(world: World, path: Path) -> list[str]:
    status, _, raw = await world.gateway.call(
        "GET", "/admin/audit/export", headers={"authorization": "Bearer " + world.tokens["superadmin"]}
    )
    assert status == 200
    lines = raw.decode().splitlines()
    path.write_text("\n".join(lines) + "\n")
    return lines


def _verify(cli: InProcessCli, db_url: str, *args: str) -> tuple[int, str]:
    done = cli(["audit", "verify", *args], db_url)
    return done.returncode, done.stdout + done.stderr


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_an_untouched_trail_verifies_and_each_kind_of_tampering_is_named(
    gateway: Gateway, db_url: str, cli: InProcessCli, tmp_path: Path
) -> None:
    world = await build_world(gateway)
    await _changes(world, 5)
    lines = await _export(world, tmp_path / "trail.ndjson")
    events = [json.loads(line) for line in lines]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(events))
    assert _verify(cli, db_url)[0] == 0
    code, out = _verify(cli, db_url, "--file", str(tmp_path / "trail.ndjson"))
    assert code == 0 and "OK" in out, out

    edited = [json.loads(line) for line in lines]
    edited[3]["target"] = "someone else"
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "edited", [json.dumps(e) for e in edited]))
    assert code == 1 and "BROKEN at 4: seq 4 was changed" in out, out

    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "deleted", lines[:2] + lines[3:]))
    assert code == 1 and "BROKEN at 4: expected seq 3, found 4" in out, out

    swapped = [*lines[:2], lines[3], lines[2], *lines[4:]]
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "swapped", swapped))
    assert code == 1 and "BROKEN at 4: expected seq 3, found 4" in out, out

    stripped = [json.loads(line) for line in lines]
    for event in stripped[:3]:  # made to look older than the chain, then rewritten at will
        event.pop("seq"), event.pop("prev_hash"), event.pop("hash")
        event["target"] = "rewritten"
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "stripped", [json.dumps(e) for e in stripped]))
    assert code == 1 and "BROKEN at 4: records without chain fields come before seq 4" in out, out

    # Dropping the newest record is invisible to the links alone; a signed checkpoint of the head catches it.
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "short", lines[:-1]))
    assert code == 0 and "no signed checkpoint covers this chain" in out, out
    assert "checkpoint written" in cli(["audit", "checkpoint"], db_url).stdout
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "short", lines[:-1]))
    assert code == 1 and f"checkpoint is at seq {len(lines)} but the chain ends at {len(lines) - 1}" in out, out
    # A periodic checkpoint is no licence to start later: only retention's own (a "cut") is.
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "headless", lines[len(lines) - 1 :]))
    assert code == 1 and "no signed checkpoint vouches for the cut" in out, out

    # Signatures checked against keys kept outside the database (the JWKS served before), or refused.
    status, _, jwks = await gateway.call("GET", "/.well-known/jwks.json")
    assert status == 200
    pinned = tmp_path / "jwks.json"
    pinned.write_bytes(jwks)
    assert _verify(cli, db_url, "--public-keys", str(pinned))[0] == 0
    other = json.loads(jwks)
    for key in other["keys"]:
        key["kid"] = "someone-else"
    pinned.write_text(json.dumps(other))
    code, out = _verify(cli, db_url, "--public-keys", str(pinned))
    assert code == 1 and "bad or unknown signature" in out, out

    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            await session.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(actor="cli:nobody"))
            await session.commit()
    finally:
        await engine.dispose()
    code, out = _verify(cli, db_url)
    assert code == 1 and "BROKEN at 2: seq 2 was changed" in out, out


async def test_retention_leaves_a_verifiable_trail(gateway: Gateway, db_url: str, cli: InProcessCli) -> None:
    world = await build_world(gateway)
    await _changes(world, 4)
    engine = create_engine(db_url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    try:
        async with session_factory(engine)() as session:
            await session.execute(update(AuditRecord).where(AuditRecord.seq <= 3).values(created_at=old))
            await session.commit()
        # The chain covers the time too: a record made to look older no longer matches its hash. Start again
        # with records that were written old.
        code, out = _verify(cli, db_url)
        assert code == 1 and "seq 1 was changed" in out
        async with session_factory(engine)() as session:
            await session.execute(delete(AuditRecord))
            await session.commit()
        code, out = _verify(cli, db_url)
        assert code == 0, "no record left, and no checkpoint said there were any"
        await _changes(world, 1, "later")
        code, out = _verify(cli, db_url)
        assert code == 1 and "are missing and no signed checkpoint vouches" in out, out
        async with session_factory(engine)() as session:  # a new database, as far as the chain knows
            for table in (AuditRecord, AuditChain, AuditCheckpoint):
                await session.execute(delete(table))
            await session.commit()
    finally:
        await engine.dispose()

    await add_events(db_url, 50, 45, 40, 1, 0)
    assert _verify(cli, db_url)[0] == 0
    done = cli(["audit", "prune", "--days", "30"], db_url)
    assert done.returncode == 0 and "removed 3" in done.stdout, done.stderr
    code, out = _verify(cli, db_url)
    assert code == 0 and "starts after a signed checkpoint" in out, out

    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            first = await session.scalar(select(AuditRecord.seq).order_by(AuditRecord.seq).limit(1))
            await session.execute(delete(AuditRecord).where(AuditRecord.seq == first))
            await session.commit()
    finally:
        await engine.dispose()
    code, out = _verify(cli, db_url)
    assert code == 1 and "no signed checkpoint vouches for the cut" in out, out


async def test_a_chained_decision_log_verifies_per_process(
    db_url: str, upstream: Upstream, tmp_path: Path, cli: InProcessCli
) -> None:
    await load_system_policy(db_url)
    log = tmp_path / "decisions.jsonl"
    settings = gateway_settings(db_url, upstream.url, audit_log=str(log), audit={"chain_decisions": True})
    async with serving(settings, upstream) as gateway:
        await gateway.org("acme")
        await gateway.user("viewer@acme.test", org="acme", role="viewer")
        token = await gateway.login("viewer@acme.test")
        for method in ("GET", "GET", "DELETE", "GET"):
            await gateway.call(method, "/api/orders", token=token, headers={"x-org": "acme"})
        await gateway.runtime.checkpoint()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines if '"stream"' in line]
    assert len(records) >= 4 and len({record["stream"] for record in records}) == 1
    code, out = _verify(cli, db_url, "--file", str(log))
    assert code == 0 and "decision stream" in out and "OK" in out, out

    changed = [line.replace('"status":403', '"status":200') for line in lines]
    assert changed != lines
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "changed.jsonl", changed))
    assert code == 1 and "was changed" in out, out
    code, out = _verify(cli, db_url, "--file", _write(tmp_path / "short.jsonl", lines[:-1]))
    assert code == 1 and "its tail was removed" in out, out


async def test_identity_changes_are_in_the_chained_trail(gateway: Gateway, db_url: str, cli: InProcessCli) -> None:
    """A person's own changes (profile, password, sessions) are audit events like an admin's, chained the same."""
    world = await build_world(gateway)
    token, user = world.tokens["member"], "user:" + world.ids["member"]
    assert (await gateway.call("PATCH", "/auth/me", json={"name": "Mem Ber"}, token=token))[0] == 200
    change = {"current_password": PASSWORD, "new_password": "a fresh long passphrase"}
    assert (await gateway.call("POST", "/auth/change-password", json=change, token=token))[0] == 200
    assert (await gateway.call("POST", "/auth/logout-all", token=token))[0] == 200
    status, events, _ = await world.call("superadmin", "GET", f"/admin/audit?actor={user}")
    assert status == 200
    assert [event["action"] for event in events["items"]] == [
        "session.logout_all",
        "user.password.change",
        "user.profile",
    ]
    assert events["items"][2]["after"] == {"name": "Mem Ber"}
    assert "passphrase" not in json.dumps(events), "never a secret in the trail"
    assert _verify(cli, db_url)[0] == 0
