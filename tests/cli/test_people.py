"""`gateway users|orgs|members|keys` (gateway/cli/people.py) against a real database: exit codes, clear errors,
idempotent policy load alongside."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_cli_creates_users_orgs_members_and_loads_policy(db_url: str) -> None:
    """users/orgs/members/policy commands succeed, and loading the policy twice adds nothing."""
    assert run_cli(["migrate"], db_url).returncode == 0
    created = run_cli(
        ["users", "create", "--email", "cli@example.test", "--superadmin"], db_url, stdin="a long password\n"
    )
    assert created.returncode == 0, created.stderr
    assert "superadmin" in created.stdout
    assert run_cli(["orgs", "create", "--slug", "cli-org", "--name", "CLI Org"], db_url).returncode == 0
    added = run_cli(["members", "add", "--org", "cli-org", "--email", "cli@example.test", "--role", "admin"], db_url)
    assert added.returncode == 0, added.stderr
    first = run_cli(["policy", "load"], db_url)
    assert first.returncode == 0, first.stderr
    second = run_cli(["policy", "load"], db_url)
    assert second.returncode == 0
    assert " 0 added" in second.stdout, second.stdout
    again = run_cli(["members", "add", "--org", "cli-org", "--email", "cli@example.test", "--role", "viewer"], db_url)
    assert again.returncode == 0, "members add on a member changes the role"
    disabled = run_cli(["users", "disable", "--email", "cli@example.test"], db_url)
    assert disabled.returncode == 0
    assert "disabled" in disabled.stdout
    assert run_cli(["users", "enable", "--email", "cli@example.test"], db_url).returncode == 0


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["orgs", "create", "--slug", "Bad Slug", "--name", "x"], "", 1, "slug"),
        (["members", "add", "--org", "missing", "--email", "a@b.test", "--role", "admin"], "", 1, "org"),
        (["users", "create", "--email", "short@example.test"], "short\n", 1, "password"),
        (["users", "create", "--email", "x@example.test"], "", 1, "standard input"),
        (["policy", "load", "no/such.csv"], "", 1, "not found"),
    ],
)
def test_cli_errors_are_clear(db_url: str, args: list[str], stdin: str, code: int, message: str) -> None:
    """Invalid input gives a one-line error naming the problem and a non-zero exit code, no traceback."""
    result = run_cli(args, db_url, stdin=stdin)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_duplicate_and_bad_policy(db_url: str, tmp_path: Path) -> None:
    """A duplicate org is refused; a poisoned policy file is refused with file and line."""
    assert run_cli(["orgs", "create", "--slug", "dup", "--name", "x"], db_url).returncode == 0
    dup = run_cli(["orgs", "create", "--slug", "dup", "--name", "x"], db_url)
    assert dup.returncode == 1
    assert "already exists" in dup.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("p, viewer, *, /a,b, GET\n")
    result = run_cli(["policy", "load", str(bad)], db_url)
    assert result.returncode == 1
    assert "bad.csv:1" in result.stderr


def test_cli_api_keys(db_url: str) -> None:
    """keys create prints the key once; list shows only prefix, id and last four; revoke marks it revoked."""
    assert run_cli(["migrate"], db_url).returncode == 0
    assert run_cli(["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url).returncode == 0
    assert run_cli(["users", "create", "--email", "ci@acme.test"], db_url, stdin="a long password\n").returncode == 0
    assert (
        run_cli(["members", "add", "--org", "acme", "--email", "ci@acme.test", "--role", "member"], db_url).returncode
        == 0
    )
    created = run_cli(
        [
            "keys",
            "create",
            "--org",
            "acme",
            "--email",
            "ci@acme.test",
            "--name",
            "deploy",
            "--scope",
            "GET /api/*",
            "--expires-days",
            "30",
            "--allow-ip",
            "10.0.0.0/8",
            "--allow-ip",
            "2001:DB8::/32",
        ],
        db_url,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("gw_live_")
    assert "only time" in created.stderr
    listed = run_cli(["keys", "list", "--org", "acme"], db_url)
    assert key[-4:] in listed.stdout
    assert key[20:60] not in listed.stdout, "the secret never appears in a listing"
    assert "active" in listed.stdout
    assert listed.stdout.splitlines()[1].endswith("\t10.0.0.0/8,2001:db8::/32"), "the allow-list, normalised"
    key_id = key.split("_")[2]
    assert run_cli(["keys", "revoke", "--id", key_id], db_url).returncode == 0
    assert "revoked" in run_cli(["keys", "list", "--org", "acme"], db_url).stdout
    bad = run_cli(
        ["keys", "create", "--org", "acme", "--email", "ci@acme.test", "--name", "x", "--scope", "GET x"], db_url
    )
    assert bad.returncode == 1
    assert "scopes[0]" in bad.stderr
    bad = run_cli(
        ["keys", "create", "--org", "acme", "--email", "ci@acme.test", "--name", "x", "--allow-ip", "10.0.0.1/8"],
        db_url,
    )
    assert bad.returncode == 1
    assert "allowed_ips[0]" in bad.stderr and "Traceback" not in bad.stderr
