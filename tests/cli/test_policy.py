"""`gateway policy` (gateway/cli/policy.py), the policy-as-code commands with real files and a real database: lint,
test, explain, diff, sync, export."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import AuditRecord
from tests.conftest import ROOT, run_cli

SYSTEM = (ROOT / "policies" / "system.csv").read_text()


def _policy(tmp_path: Path, text: str, name: str = "policy.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_lint_accepts_the_shipped_policy(db_url: str) -> None:
    """The repository's own model and policies lint clean."""
    result = run_cli(["policy", "lint"], db_url)
    assert result.returncode == 0, result.stdout
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_lint_reports_each_problem_with_file_and_line(db_url: str, tmp_path: Path) -> None:
    """Poisoned values, unknown roles, cycles are errors (exit 1); duplicates, shadowed allows are warnings."""
    bad = _policy(
        tmp_path,
        SYSTEM
        + "\n".join(
            [
                "p, viewer, *, /*, GET",  # duplicate of system.csv
                "p, auditor, acme, /api/reports/*, GET",
                "p, auditor, acme, /api/*, *, deny",  # shadows the auditor allow above
                "g, user:00000000-0000-4000-8000-000000000001, admni, acme",  # typo: unknown role
                "g, viewer, owner, *",  # owner > admin > member > viewer > owner: a cycle
                "p, viewer, acme, /files/a b, GET",  # whitespace in a value
                "p, viewer, acme, /v1.json, GET",  # '.' is a keyMatch2 wildcard
                "p, viewer, acme, /x, GET # trailing",  # inline comment
            ]
        )
        + "\n",
    )
    result = run_cli(["policy", "lint", str(bad)], db_url)
    assert result.returncode == 1
    out = result.stdout
    base = SYSTEM.count("\n")
    assert f"policy.csv:{base + 1}: warning: duplicate of" in out
    assert f"policy.csv:{base + 2}: warning: allow is always overridden by the deny at" in out
    assert f"policy.csv:{base + 3}: warning: deny '/api/*' does not cover '/api' itself" in out
    assert f"policy.csv:{base + 4}: error: unknown role 'admni'" in out
    assert "error: role inheritance cycle:" in out
    assert f"policy.csv:{base + 6}: error:" in out
    assert f"policy.csv:{base + 7}: error: path pattern '/v1.json'" in out
    assert f"policy.csv:{base + 8}: error: inline comments" in out


def test_lint_refuses_a_broken_model(db_url: str, tmp_path: Path) -> None:
    """A model casbin cannot load is an error naming the model file."""
    model = tmp_path / "model.conf"
    model.write_text("[request_definition]\nr = sub\n[policy_effect]\ne = nonsense\n")
    result = run_cli(["policy", "lint", "--model", str(model)], db_url)
    assert result.returncode == 1
    assert f"{model}:0: error: casbin cannot load the model" in result.stdout


def test_policy_test_runs_the_shipped_tables(db_url: str) -> None:
    """policies/tests/*.csv covers every system role and passes against the shipped files."""
    result = run_cli(["policy", "test"], db_url)
    assert result.returncode == 0, result.stdout
    for role in ("viewer", "member", "admin", "owner", "superadmin"):
        assert role in (ROOT / "policies" / "tests" / "system.csv").read_text()
    assert " 0 failed" in result.stdout


def test_policy_test_prints_failing_rows_with_the_deciding_line(db_url: str, tmp_path: Path) -> None:
    """A wrong expectation fails (exit 1) and names the row and the line that decided."""
    policy = _policy(tmp_path, SYSTEM + "p, viewer, acme, /api/billing/*, *, deny\n")
    table = _policy(
        tmp_path, "viewer, acme, GET, /api/billing/1, allow\nviewer, acme, GET, /api/x, allow\n", "table.csv"
    )
    result = run_cli(["policy", "test", str(policy), "--tables", str(table)], db_url)
    assert result.returncode == 1
    assert "table.csv:1: viewer acme GET /api/billing/1: expected allow, got deny" in result.stdout
    assert "matched p, viewer, acme, /api/billing/*, *, deny" in result.stdout
    assert "1 passed, 1 failed" in result.stdout


def _seed(db_url: str) -> None:
    assert run_cli(["migrate"], db_url).returncode == 0
    assert run_cli(["policy", "load"], db_url).returncode == 0
    assert run_cli(["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url).returncode == 0
    assert run_cli(["users", "create", "--email", "v@acme.test"], db_url, stdin="a long password\n").returncode == 0
    assert (
        run_cli(["members", "add", "--org", "acme", "--email", "v@acme.test", "--role", "viewer"], db_url).returncode
        == 0
    )


def test_explain_from_the_live_store(db_url: str) -> None:
    """explain prints the decision, the user's roles and the deciding line, from the database."""
    _seed(db_url)
    allowed = run_cli(["policy", "explain", "--user", "v@acme.test", "--org", "acme", "GET", "/api//x/./y"], db_url)
    assert allowed.returncode == 0, allowed.stderr
    assert "ALLOW GET /api/x/y" in allowed.stdout
    assert "roles: viewer" in allowed.stdout
    assert "decided by: matched p, viewer, *, /*, GET, allow" in allowed.stdout
    denied = run_cli(["policy", "explain", "--user", "v@acme.test", "--org", "acme", "delete", "/api/x"], db_url)
    assert "DENY DELETE /api/x" in denied.stdout
    assert "deny by default" in denied.stdout
    unknown = run_cli(["policy", "explain", "--user", "v@acme.test", "--org", "nope", "GET", "/"], db_url)
    assert unknown.returncode == 1
    assert "no organization" in unknown.stderr


def test_diff_sync_prune_and_export_round_trip(db_url: str, tmp_path: Path) -> None:
    """diff shows +/- lines; sync adds; --prune removes (never user grants unless asked, never the shipped system
    roles that `gateway migrate` stored); export round-trips."""
    _seed(db_url)
    assert (
        run_cli(
            ["users", "create", "--email", "root@x.test", "--superadmin"], db_url, stdin="a long password\n"
        ).returncode
        == 0
    )
    extra = "p, viewer, acme, /api/billing/*, *, deny\n"
    files = _policy(tmp_path, SYSTEM + extra)

    diff = run_cli(["policy", "diff", str(files)], db_url)
    assert diff.stdout.splitlines()[-2:] == ["+ " + extra.strip(), "1 to add, 0 to remove"]

    dry = run_cli(["policy", "sync", str(files), "--dry-run"], db_url)
    assert "dry run: nothing was changed" in dry.stdout
    assert "1 to add" in run_cli(["policy", "diff", str(files)], db_url).stdout

    assert run_cli(["policy", "sync", str(files)], db_url).returncode == 0
    assert "0 to add, 0 to remove" in run_cli(["policy", "diff", str(files)], db_url).stdout

    shrunk = _policy(tmp_path, SYSTEM.replace("p, admin, *, /*, DELETE\n", ""), "shrunk.csv")
    shrunk_diff = run_cli(["policy", "diff", str(shrunk)], db_url).stdout
    assert "- p, viewer, acme, /api/billing/*, *, deny" in shrunk_diff
    assert "p, admin, *, /*, DELETE" not in shrunk_diff, "a shipped system line is never pruned"
    kept = run_cli(["policy", "sync", str(shrunk)], db_url)  # without --prune nothing is removed
    assert "0 to remove" in kept.stdout
    pruned = run_cli(["policy", "sync", str(shrunk), "--prune"], db_url)
    assert "p, admin, *, /*, DELETE" not in pruned.stdout
    assert "- p, viewer, acme, /api/billing/*, *, deny" in pruned.stdout
    assert "- g, user:" not in pruned.stdout, "a user grant must survive --prune"
    grants = run_cli(["policy", "diff", str(shrunk), "--include-grants"], db_url)
    assert "- g, user:" in grants.stdout
    assert ", superadmin, *" in grants.stdout

    out = tmp_path / "export" / "all.csv"
    assert run_cli(["policy", "export", "--out", str(out)], db_url).returncode == 0
    assert (
        "0 to add, 0 to remove" in run_cli(["policy", "sync", str(out), "--prune", "--include-grants"], db_url).stdout
    )

    async def events() -> list[AuditRecord]:
        engine = create_engine(db_url)
        try:
            async with session_factory(engine)() as session:
                query = select(AuditRecord).where(AuditRecord.action == "policy.sync").order_by(AuditRecord.id)
                return list(await session.scalars(query))
        finally:
            await engine.dispose()

    recorded = asyncio.run(events())
    assert [event.action for event in recorded] == ["policy.sync", "policy.sync"]
    assert json.loads(recorded[0].detail) == {"added": [extra.strip()], "removed": []}
    assert recorded[0].actor.startswith("cli:")


def test_lint_refuses_a_model_that_calls_an_unknown_function(db_url: str, tmp_path: Path) -> None:
    """A matcher calling a function casbin does not have (it would load, then fail every decision) is a lint
    error naming the function."""
    model = tmp_path / "model.conf"
    model.write_text((ROOT / "model.conf").read_text().replace("keyMatch2(r.obj", "keyMatch9(r.obj"))
    result = run_cli(["policy", "lint", "--model", str(model), str(ROOT / "policies" / "system.csv")], db_url)
    assert result.returncode == 1
    assert "keyMatch9()" in result.stdout and "casbin does not provide" in result.stdout
